. /work/venv/bin/activate && export PYTHONPATH=$PWD AUTOMETA_DATA=/work/shared/data OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1
for cfg in "reduced 4 5 32 first finite_difference" "reduced 4 5 32 second finite_difference" "reduced 4 5 32 second exact" "darts 4 5 32 first finite_difference" "darts 4 5 32 second finite_difference"; do
  nice -n 10 python benchmarks/darts/step_cost.py $cfg
done
