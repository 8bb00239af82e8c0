#!/usr/bin/env bash
# Runs the whole comparison, one part per process (each < 15 min on one core); logs in results/.
set -euo pipefail
cd "$(dirname "$0")/../.."
export AUTOMETA_DATA=${AUTOMETA_DATA:-/work/shared/data} OMP_NUM_THREADS=1
PY=${PY:-/work/venv/bin/python}
mkdir -p experiments/optimizers/results
for part in quadratic mnist-train mnist-eval "generalization --variants mnist_200_steps mnist_relu" \
            "generalization --variants mnist_40_units mnist_2_layers"; do
  echo "== $part" ; /usr/bin/time -f "%e s wall, %U s user" nice -n 5 $PY experiments/optimizers/compare.py $part
done 2>&1 | tee -a experiments/optimizers/results/log.txt
