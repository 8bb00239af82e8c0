#!/usr/bin/env bash
# Issues 12 (dataset distillation) and 14 (model-based learners) on one lent GPU, in one device call.
#
# Before the call, here (a repo-root folder that .git/info/exclude ignores, carried by the call; 49 MB):
#   mkdir -p .gpu_data && cp ../shared/data/{mnist,fashion_mnist}.npz .gpu_data/ &&
#   python -c "import numpy as np; d=dict(np.load('../shared/data/omniglot.npz')); d.pop('images105_packed');
#              np.savez_compressed('.gpu_data/omniglot.npz', **d)"      # 28x28 Omniglot only (6.6 MB)
# The call:  run(command="bash benchmarks/gpu_issues_12_14.sh 480", carry=[".gpu_data"], timeout_s=600)
# A rehearsal (tiny budgets, one evaluation network, same code paths): bash benchmarks/gpu_issues_12_14.sh 100 smoke
#
# Both parts run at once, each bounded by SECONDS of wall time: benchmarks/distillation/gpu_study.py (14
# distillation/coreset studies, one process each) and benchmarks/modelbased/gpu_jobs.sh (MANN / LSTM /
# feed-forward, MetaNet / ProtoNet, pre-training + Simple CNAPS). What comes back in $OUT: env.json,
# results.tgz (every study folder and log; re-packed every 45 s, so a cut-off call still returns the latest),
# distill_summary.md, gpu_util.csv, main.log.
set -uo pipefail
seconds=${1:-480}
mode=${2:-full}
out=${OUT:-/tmp/gpu_out}
work=/tmp/gpu_work
rm -rf "$work"; mkdir -p "$work" "$out"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 AUTOMETA_DATA=${AUTOMETA_DATA:-$PWD/.gpu_data}
py=${PYTHON:-python3}
log="$work/main.log"
say() { echo "[$(date +%T)] $*" | tee -a "$log"; }
pack() { tar czf "$out/results.tgz.tmp" -C "$work" . 2>/dev/null && mv "$out/results.tgz.tmp" "$out/results.tgz"; }

say "start: $seconds s, mode $mode, data $AUTOMETA_DATA"
$py - > "$work/env.json" <<'PY'
import json, os, platform, subprocess, torch
info = {"torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
        "cuda_available": torch.cuda.is_available(), "cpu_count": os.cpu_count(),
        "defaults": {"cuda.matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
                     "cudnn.allow_tf32": torch.backends.cudnn.allow_tf32}}
if torch.cuda.is_available():
    info["device_name"] = torch.cuda.get_device_name(0)
    info["capability"] = torch.cuda.get_device_capability(0)
    try:
        info["nvidia_smi"] = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                                             "--format=csv"], capture_output=True, text=True, timeout=20).stdout
    except Exception as exc:  # noqa: BLE001 - a report, not a check
        info["nvidia_smi"] = repr(exc)
print(json.dumps(info, indent=1))
PY
cp "$work/env.json" "$out/env.json"
cat "$work/env.json" | tee -a "$log"
# MPS lets the ~20 processes' small kernels share the GPU instead of time-slicing whole contexts; it is
# used only if a CUDA client works under it within 60 s (MPS=0 skips it)
if [[ ${MPS:-1} == 1 ]] && command -v nvidia-cuda-mps-control > /dev/null; then
  export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps_pipe CUDA_MPS_LOG_DIRECTORY=/tmp/mps_log
  mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
  if nvidia-cuda-mps-control -d && timeout 60 $py -c "import torch; print(torch.ones(8, device='cuda').sum().item())"; then
    say "MPS: on"
  else
    echo quit | nvidia-cuda-mps-control 2> /dev/null
    unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
    say "MPS: could not be used; processes time-slice the GPU"
  fi
else
  say "MPS: off"
fi
(nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 5 > "$work/gpu_util.csv" 2>&1 &)
(while sleep 45; do pack; done) & packer=$!

budget=$((seconds - 25))   # each part ends by itself within this; the rest is packing
if [[ $mode == smoke ]]; then nets=1; else nets=5; fi
$py benchmarks/distillation/gpu_study.py --out "$work/distill" --seconds "$budget" --eval-nets "$nets" --device "${DEVICE:-cuda}" \
  > "$work/distill.log" 2>&1 & d=$!
if [[ -f benchmarks/modelbased/gpu_jobs.sh ]]; then
  bash benchmarks/modelbased/gpu_jobs.sh "$work/modelbased" "$budget" > "$work/modelbased.log" 2>&1 & m=$!
else
  say "benchmarks/modelbased/gpu_jobs.sh missing: issue 14's part skipped"; m=""
fi
wait $d; say "distillation part: exit $?"
[[ -n "$m" ]] && { wait "$m"; say "model-based part: exit $?"; }
pkill -f "nvidia-smi --query-gpu" 2>/dev/null
[[ -n "${CUDA_MPS_PIPE_DIRECTORY:-}" ]] && { echo quit | nvidia-cuda-mps-control 2> /dev/null; }
kill $packer 2>/dev/null
cp "$work/distill/summary.md" "$out/distill_summary.md" 2>/dev/null
cp "$work/gpu_util.csv" "$out/" 2>/dev/null
say "done"
cp "$log" "$out/main.log"
pack
ls -la "$out"
