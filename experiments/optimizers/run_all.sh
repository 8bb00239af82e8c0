#!/usr/bin/env bash
# The whole comparison as it was run, one part per process (each under 15 min on an idle core);
# logs go to experiments/optimizers/comparison/log.txt. The MNIST LSTM was meta-trained in two
# chunks (80 iterations, then 100 more with the saved Adam state).
set -euo pipefail
cd "$(dirname "$0")/../.."
export AUTOMETA_DATA=${AUTOMETA_DATA:-/work/shared/data} OMP_NUM_THREADS=1
PY=${PY:-/work/venv/bin/python}
mkdir -p experiments/optimizers/comparison
for part in "quadratic --iterations 800" mnist-train "mnist-continue --iterations 100" mnist-eval \
            "generalization --variants mnist_200_steps" "generalization --variants mnist_40_units" \
            "generalization --variants mnist_2_layers" "generalization --variants mnist_relu"; do
  echo "== $part" ; /usr/bin/time -f "%e s wall, %U s user" nice -n 5 $PY experiments/optimizers/compare.py $part
done 2>&1 | tee -a experiments/optimizers/comparison/log.txt
$PY experiments/optimizers/report.py > /dev/null
