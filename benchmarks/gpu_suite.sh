#!/usr/bin/env bash
# The GPU checks and measurements of issue 15, in one call (at most 9 minutes by its own clock; not yet run on a GPU).
#
# On a GPU machine with no package index, from the repository root:
#   1. here, before the call (needs a package index; about 15 MB): bash benchmarks/gpu_bundle.sh .gpu_bundle 3.12
#      (wheels for the GPU machine's Python 3.12: higher, torchopt + optree + graphviz (torchopt imports
#      graphviz), gym + gym_notices (learn2learn imports gym), Cython < 3; learn2learn 0.2.0 as source,
#      whose C files are regenerated with Cython < 3 and compiled there; omniglot.npz)
#   2. the device call:  run(command="bash benchmarks/gpu_suite.sh --bundle .gpu_bundle",
#                            carry=[".gpu_bundle"], timeout_s=600)
#      The results come back from $OUT (at most 8 files): env.json, gpu_tests.log, peers.json,
#      peers_5steps.json, chunks.json, curves.json, curves.png, suite.log (the full peers log stays in /tmp/gpu_peers.log).
# A dry run on a CPU (no peers, tiny sizes, a minute or few): bash benchmarks/gpu_suite.sh --device cpu --tiny
#
# Stages (each bounded by `timeout`, so that one overrun leaves the others' results):
#   env     device name, torch/CUDA versions, TF32 switches                          -> env.json
#   peers   install the peers from the bundle (into BUNDLE/site; torch is never touched: --no-deps)
#   tests   python -m pytest -m gpu tests/gpu (vmap/loop vs float64 with TF32 off, device sampler,
#           run/resume on CUDA, memory bound)                                        -> gpu_tests.log
#   bench   benchmarks/gpu_peers.py: plain loop, learn2learn, higher, torchopt against autometa's loop,
#           vmap (memory-bounded) and unbounded vmap; 5/20-way 1 step, 5-way 5 steps, 2nd and 1st order;
#           medians, ratios, peak memory, gradient error vs float64, precision table -> peers.json/.log
#   curves  benchmarks/gpu_curves.py: time-budgeted Omniglot 5-way 1-shot runs of MAML, ProtoNet,
#           MatchingNet, RelationNet, Siamese, GraphNet (75/60/20/20/20/20 s, --scale multiplies,
#           shrunk to fit the time left)
#                                                                                    -> curves.json/.png
# Options: --device cuda|cpu  --tiny  --bundle DIR  --scale X  --stages "env peers tests bench curves"
#          --learners "maml protonet" (the curves' learners, in order)
# Time: the stages share SUITE_SECONDS (default 540): each gets at most its cap and never more than what
# is left less a reserve for the stages after it (the curves keep at least 150 s); the curves run MAML
# and ProtoNet first and the others while time is left. A ten-minute-class run of the done-when is a call
# of its own: SUITE_SECONDS=590 bash benchmarks/gpu_suite.sh --stages curves --learners maml --scale 7
set -uo pipefail
device=cuda; tiny=""; bundle=.gpu_bundle; scale=1; stages="env peers tests bench curves"; learners=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --device) device=$2; shift 2;;
    --tiny) tiny=--tiny; shift;;
    --bundle) bundle=$2; shift 2;;
    --scale) scale=$2; shift 2;;
    --stages) stages=$2; shift 2;;
    --learners) learners=$2; shift 2;;
    *) echo "unknown option $1 (see the header of $0)"; exit 2;;
  esac
done
[[ -d "$bundle" ]] && bundle=$(cd "$bundle" && pwd)
out=${OUT:-/tmp/gpu_results}
mkdir -p "$out"
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD:$bundle/site${PYTHONPATH:+:$PYTHONPATH}"
[[ -f "$bundle/data/omniglot.npz" ]] && export AUTOMETA_DATA=${AUTOMETA_DATA:-$PWD/$bundle/data}
log="$out/suite.log"
say() { echo "[$(date +%T)] $*" | tee -a "$log"; }
has() { [[ " $stages " == *" $1 "* ]]; }
t0=$SECONDS
total=${SUITE_SECONDS:-540}  # the whole suite; the device call's limit is 600 s
# min(cap, time left less a reserve), at least 10 s (timeout 0 would mean no limit)
left() { local r=$((total - (SECONDS - t0) - ${2:-0})); (( r > $1 )) && r=$1; (( r < 10 )) && r=10; echo "$r"; }

if has env; then
  say "env"
  "$py" - "$device" > "$out/env.json" <<'EOF'
import json, platform, sys, torch
from autometa.hypergrad import precision_state
device = torch.device(sys.argv[1])
cuda = device.type == "cuda" and torch.cuda.is_available()
print(json.dumps({"device": str(device), "device_name": torch.cuda.get_device_name(device) if cuda else platform.processor(),
                  "torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
                  "python": platform.python_version(), "precision_state_torch_defaults": precision_state(),
                  "free_memory_gib": torch.cuda.mem_get_info(device)[0] / 2**30 if cuda else None}, indent=1))
EOF
  cat "$out/env.json" | tee -a "$log"
fi

if has peers && [[ -d "$bundle/wheels" ]]; then
  say "peers: installing from $bundle (no index, --no-deps)"
  site="$bundle/site"; build="$bundle/build-site"
  mkdir -p "$site" "$build"
  "$py" -m pip install -q --no-index --no-deps --target "$site" "$bundle"/wheels/{higher-,torchopt-,optree-,graphviz-,gym-,gym_notices-}*.whl 2>&1 | tail -3 | tee -a "$log"
  "$py" -m pip install -q --no-index --no-deps --target "$build" "$bundle"/wheels/[Cc]ython*.whl 2>&1 | tail -3 | tee -a "$log"
  work=$(mktemp -d); tar xzf "$bundle"/sdist/learn2learn-0.2.0.tar.gz -C "$work"
  ( cd "$work"/learn2learn-0.2.0 && find learn2learn -name '*.c' -delete \
    && PYTHONPATH="$build" timeout "$(left 150 300)" "$py" setup.py -q build_ext -j 8 > build.log 2>&1 \
    && PYTHONPATH="$build" "$py" -m pip install -q --no-index --no-deps --no-build-isolation --target "$site" . >> build.log 2>&1 \
    || { echo "learn2learn build failed:"; tail -20 build.log; } ) 2>&1 | tee -a "$log"
  "$py" -c 'import importlib
for m in ("learn2learn", "higher", "torchopt"):
    try: importlib.import_module(m); print(m, "imports")
    except Exception as e: print(m, "does not import:", type(e).__name__, e)' 2>&1 | tee -a "$log"
elif has peers; then
  say "peers: no $bundle/wheels; the peer columns will be left out (bash benchmarks/gpu_bundle.sh makes them)"
fi

if has tests; then
  say "tests: pytest -m gpu tests/gpu"
  timeout "$(left 90 300)" "$py" -m pytest -m gpu tests/gpu -p no:cacheprovider -q -s -rs 2>&1 | tee "$out/gpu_tests.log" | tail -15 | tee -a "$log"
fi

if has bench; then
  say "bench: gpu_peers.py"
  if [[ -n "$tiny" ]]; then bench=(--tiny); else bench=(--configs 5:1 20:1 --orders second first); fi
  timeout "$(left 130 240)" "$py" benchmarks/gpu_peers.py --device "$device" "${bench[@]}" --json "$out/peers.json" 2>&1 | tee /tmp/gpu_peers.log | tail -60 | tee -a "$log"
  if [[ -z "$tiny" ]]; then  # five inner steps: second order only (the slowest loops)
    timeout "$(left 60 180)" "$py" benchmarks/gpu_peers.py --device "$device" --configs 5:5 --orders second --reps 2 --steps 2 --json "$out/peers_5steps.json" 2>&1 | tee -a /tmp/gpu_peers.log | tail -16 | tee -a "$log"
  fi
  say "bench: vmap chunk size against speed and memory (20-way, 1 step, second order)"
  if [[ -n "$tiny" ]]; then curve=(--tiny --chunk-curve 1 2 4); else curve=(--configs 20:1 --orders second --reps 2 --chunk-curve 1 2 4 8 16 32); fi
  timeout "$(left 30 160)" "$py" benchmarks/gpu_peers.py --device "$device" "${curve[@]}" --json "$out/chunks.json" 2>&1 | tee -a /tmp/gpu_peers.log | tail -14 | tee -a "$log"
fi

if has curves; then
  say "curves: gpu_curves.py (scale $scale)"
  runs=$(mktemp -d)  # the runs' directories stay behind: only 8 files come back from a device call
  budget=$(left 3000 5)  # what is left of the suite's time
  timeout "$budget" "$py" benchmarks/gpu_curves.py --device "$device" --out "$runs" --scale "$scale" \
    --total-s $((budget - 10)) ${learners:+--learners $learners} $tiny 2>&1 | tee -a "$log"
  cp "$runs"/curves.json "$runs"/curves.png "$out"/ 2>/dev/null
fi
if [[ -f "$out/peers.json" && -f "$out/curves.json" ]]; then
  say "summary: the run loop's MAML tasks/s against the bare meta-step's (issue 15 wants >= 90%)"
  "$py" - "$out/peers.json" "$out/curves.json" <<'EOF' 2>&1 | tee -a "$log"
import json, sys
peers, curves = (json.load(open(p)) for p in sys.argv[1:3])
bare = next((r["rows"]["autometa-vmap"].get("tasks_per_s") for r in peers["runs"]
             if r["ways"] == 5 and r["inner_steps"] == 1 and r["order"] == "second"
             and "autometa-vmap" in r["rows"]), None)
loop = curves.get("maml", {}).get("run_loop_tasks_per_s")
if bare and loop:
    print(f"bare meta-step {bare:.1f} tasks/s, run loop {loop:.1f} tasks/s: {100 * loop / bare:.0f}% "
          f"(meta-batch {peers['config']['meta_batch']} in the bench; the run uses its config's)")
else:
    print("not available:", {"bare": bare, "run loop": loop})
EOF
fi
say "done in $((SECONDS - t0)) s"
