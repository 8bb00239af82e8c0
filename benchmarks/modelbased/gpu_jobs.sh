#!/usr/bin/env bash
# Issue 14 on one GPU, all jobs within a wall-clock allowance:
#
#     bash benchmarks/modelbased/gpu_jobs.sh OUTDIR SECONDS
#
# Three chains run side by side as background processes (at most 6 worker processes at a time),
# each command under `timeout`, so that everything has finished, results written, SECONDS after
# the start; one chain failing does not stop the others:
#
#   mann:    speed probe of MANN on run.device and on a CPU core (~30 s; the faster is used, see
#            speed_probe.py), then `autometa compare` of MANN, LSTM and feed-forward
#            (experiments/compare_mann_omniglot_gpu.yaml, 3 workers)           -> OUTDIR/mann/
#   metanet: `autometa compare` of MetaNet and ProtoNet
#            (experiments/compare_metanet_omniglot_gpu.yaml, 2 workers)         -> OUTDIR/metanet/
#   cnaps:   pre-train the Conv4-64 backbone (experiments/pretrain_conv4_omniglot_background_gpu.yaml)
#            -> OUTDIR/pretrain/, then `autometa compare` of the four CNAPs cells at 5/20-way
#            1/5-shot on it (experiments/compare_cnaps_omniglot_gpu.yaml, 2 workers) -> OUTDIR/cnaps/
#
# Then benchmarks/modelbased/summarize.py writes OUTDIR/summary.md and OUTDIR/results.json.
# Checkpoints are deleted except the backbone's (OUTDIR/pretrain/checkpoints/last.pt) and MANN's
# (resumable with `autometa run --resume`); KEEP_CHECKPOINTS=1 keeps them all.
# Logs: OUTDIR/gpu_jobs.log (the schedule) and OUTDIR/logs/*.log; the configs used: OUTDIR/configs/.
#
# Environment (defaults in brackets): DEVICE [cuda] the run.device of every job; MANN_DEVICE [auto]
# the device of the MANN comparison (auto: the one with more meta-steps a second by the speed probe,
# 64 episodes a step on DEVICE, 16 on a CPU core);
# TEST_TASKS [600]; PYTHON [python3]; AUTOMETA_DATA must name the folder holding omniglot.npz
# (images28 is enough); MARGIN_METANET [110] and MARGIN_MANN [60] seconds kept for start-up, test
# and report after those comparisons' meta-training; CNAPS_RUN_OVERHEAD [20] seconds per CNAPs
# run besides meta-training. A CPU dry run of the plumbing (FORCE_PROBE=1 runs the probe on cpu):
#     DEVICE=cpu TEST_TASKS=10 FORCE_PROBE=1 MARGIN_METANET=230 MARGIN_MANN=220 CNAPS_RUN_OVERHEAD=10 \
#         bash benchmarks/modelbased/gpu_jobs.sh /tmp/mb 300
set -u
if [ $# -ne 2 ]; then
  echo "usage: bash benchmarks/modelbased/gpu_jobs.sh OUTDIR SECONDS" >&2
  exit 2
fi
OUT=$(mkdir -p "$1" && cd "$1" && pwd)
S=$2
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT" || exit 2
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
MANN_DEVICE=${MANN_DEVICE:-auto}
TEST_TASKS=${TEST_TASKS:-600}
T0=$(date +%s)
mkdir -p "$OUT/configs" "$OUT/logs"
CLI=("$PY" -m autometa.cli)
CONF=("$PY" benchmarks/modelbased/gpu_config.py)

elapsed() { echo $(( $(date +%s) - T0 )); }
left() { echo $(( S - $(elapsed) )); }
at_least() { if [ "$1" -lt "$2" ]; then echo "$2"; else echo "$1"; fi; }
at_most() { if [ "$1" -gt "$2" ]; then echo "$2"; else echo "$1"; fi; }
say() { echo "[$(date -u +%H:%M:%S) +$(elapsed)s] $*" | tee -a "$OUT/gpu_jobs.log"; }
# guarded CMD...: run CMD, killed (with its process group) `margin` seconds before the allowance ends
guarded() {
  local margin=$1; shift
  local t; t=$(at_least $(( $(left) - margin )) 1)
  timeout -k 5 "$t" "$@"
  local rc=$?
  [ $rc -eq 124 ] && say "TIMEOUT after ${t}s: $*"
  return $rc
}

say "start: OUT=$OUT SECONDS=$S DEVICE=$DEVICE MANN_DEVICE=$MANN_DEVICE TEST_TASKS=$TEST_TASKS AUTOMETA_DATA=${AUTOMETA_DATA:-unset}"
"$PY" -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.cuda.is_available())" \
  >> "$OUT/gpu_jobs.log" 2>&1

chain_metanet() {
  local budget; budget=$(at_least $(( $(left) - ${MARGIN_METANET:-110} )) 10)
  "${CONF[@]}" experiments/compare_metanet_omniglot_gpu.yaml "$OUT/configs/metanet.yaml" "run.device=$DEVICE" \
    "run.device_tasks=$([ "$DEVICE" = cpu ] && echo false || echo true)" "run.time_budget_s=$budget" \
    "run.test_tasks=$TEST_TASKS" || { say "config failed: $FUNCNAME"; return 1; }
  say "metanet: compare, time_budget_s=$budget per learner"
  guarded 5 "${CLI[@]}" compare "$OUT/configs/metanet.yaml" --out "$OUT/metanet" --workers 2 --quiet
  say "metanet: done (rc $?)"
}

chain_cnaps() {
  local pre; pre=$(at_least $(( S * 22 / 100 )) 10)
  local tasks_on_device; tasks_on_device=$([ "$DEVICE" = cpu ] && echo false || echo true)
  "${CONF[@]}" experiments/pretrain_conv4_omniglot_background_gpu.yaml "$OUT/configs/pretrain.yaml" \
    "run.device=$DEVICE" "run.device_tasks=$tasks_on_device" "run.time_budget_s=$pre" || { say "config failed: $FUNCNAME"; return 1; }
  say "cnaps: pre-training the backbone, time_budget_s=$pre"
  guarded 60 "${CLI[@]}" run "$OUT/configs/pretrain.yaml" --out "$OUT/pretrain" > "$OUT/logs/pretrain.log" 2>&1
  say "cnaps: pre-training done (rc $?)"
  local backbone="$OUT/pretrain/checkpoints/last.pt" hidden=64
  if [ ! -f "$backbone" ]; then
    backbone="$ROOT/benchmarks/modelbased/conv4_omniglot_background.pt" hidden=32
    say "cnaps: no pre-trained backbone; falling back to the CPU one ($backbone, Conv4-32)"
  fi
  # 16 runs on 2 workers: 8 train for `budget` s, every run pays ~OVERHEAD s (start, data, test)
  local overhead=${CNAPS_RUN_OVERHEAD:-20}
  # (40 s for the comparison's own start and report)
  local budget; budget=$(at_least $(( (2 * ($(left) - 40) - 16 * overhead) / 8 )) 5)
  "${CONF[@]}" experiments/compare_cnaps_omniglot_gpu.yaml "$OUT/configs/cnaps.yaml" "run.device=$DEVICE" \
    "run.device_tasks=$tasks_on_device" "run.time_budget_s=$budget" "run.test_tasks=$TEST_TASKS" \
    "learner.backbone=$backbone" "model.hidden=$hidden" || { say "config failed: $FUNCNAME"; return 1; }
  say "cnaps: compare, time_budget_s=$budget per FiLM learner, backbone $backbone"
  guarded 5 "${CLI[@]}" compare "$OUT/configs/cnaps.yaml" --out "$OUT/cnaps" --workers 2 --quiet
  say "cnaps: done (rc $?)"
}

chain_mann() {
  local device=$MANN_DEVICE
  "${CONF[@]}" experiments/compare_mann_omniglot_gpu.yaml "$OUT/configs/mann_probe.yaml" || { say "config failed: $FUNCNAME"; return 1; }
  if [ "$device" = auto ]; then
    device=$DEVICE
    if [ "$DEVICE" != cpu ] || [ "${FORCE_PROBE:-0}" = 1 ]; then  # both probes at once, ~30 s
      timeout -k 5 90 "$PY" benchmarks/modelbased/speed_probe.py "$OUT/configs/mann_probe.yaml" mann "$DEVICE" \
        > "$OUT/logs/probe_device.json" 2> "$OUT/logs/probe_device.log" &
      timeout -k 5 90 "$PY" benchmarks/modelbased/speed_probe.py "$OUT/configs/mann_probe.yaml" mann cpu --meta-batch 16 \
        > "$OUT/logs/probe_cpu.json" 2> "$OUT/logs/probe_cpu.log" &
      wait
      device=$("$PY" - "$OUT/logs/probe_device.json" "$OUT/logs/probe_cpu.json" "$DEVICE" <<'EOF'
import json, sys
speeds = {}
for path in sys.argv[1:3]:
    try:
        entry = json.loads(open(path).read().strip().splitlines()[-1])
        speeds[entry["device"]] = entry["s_per_step"]
    except Exception:
        pass
print(min(speeds, key=speeds.get) if speeds else sys.argv[3])
EOF
)
      say "mann: speed probe $(cat "$OUT/logs/probe_device.json" "$OUT/logs/probe_cpu.json" 2>/dev/null | tr '\n' ' ')-> $device"
    fi
  fi
  # learning is bound by updates, not episodes (mann_probe.py): on a CPU core a step of 16 episodes
  # (the paper's) is 4x cheaper than one of 64, on a GPU about as dear, so a CPU gets 16
  local batch=64
  [ "$device" = cpu ] && batch=16
  local budget; budget=$(at_least $(( $(left) - ${MARGIN_MANN:-60} )) 10)
  local ff; ff=$(at_most 60 "$budget")
  "${CONF[@]}" experiments/compare_mann_omniglot_gpu.yaml "$OUT/configs/mann.yaml" "run.device=$device" \
    "outer.meta_batch=$batch" "run.time_budget_s=$budget" "fillers.feedforward.run.time_budget_s=$ff" \
    "run.test_tasks=$TEST_TASKS" || { say "config failed: $FUNCNAME"; return 1; }
  say "mann: compare on $device, $batch episodes a step, time_budget_s=$budget (feed-forward $ff)"
  guarded 5 "${CLI[@]}" compare "$OUT/configs/mann.yaml" --out "$OUT/mann" --workers 3 --quiet
  say "mann: done (rc $?)"
}

chain_mann > "$OUT/logs/mann.log" 2>&1 &
PID_MANN=$!
chain_metanet > "$OUT/logs/metanet.log" 2>&1 &
PID_METANET=$!
chain_cnaps > "$OUT/logs/cnaps.log" 2>&1 &
PID_CNAPS=$!
wait $PID_MANN $PID_METANET $PID_CNAPS

if [ "${KEEP_CHECKPOINTS:-0}" != 1 ]; then  # keep only the backbone and MANN's (resumable) weights
  find "$OUT/cnaps" "$OUT/metanet" "$OUT/mann/mann_omniglot/lstm" "$OUT/mann/mann_omniglot/feedforward" \
    -name '*.pt' -delete 2>/dev/null
fi
say "all chains done; summarising"
timeout -k 2 "$(at_least $(( $(left) - 1 )) 5)" "$PY" benchmarks/modelbased/summarize.py --runs "$OUT" \
  --json "$OUT/results.json" > "$OUT/summary.md" 2> "$OUT/logs/summarize.log"
say "summary rc $? -> $OUT/summary.md; finished after $(elapsed)s of $S"
