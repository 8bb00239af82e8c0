"""A budgeted CPU run of the meta-learner LSTM on Omniglot 5-way 1-shot (7 minutes of meta-training).

``autometa run`` does not import ``autometa.optimizers`` yet, so this imports it (registering
``learner.name: metalearner_lstm``) and calls the same ``run_experiment``:

    AUTOMETA_DATA=/work/shared/data OMP_NUM_THREADS=1 nice -n 5 python experiments/optimizers/omniglot_budget_run.py OUT_DIR
"""

import json
import sys
from pathlib import Path

import autometa.optimizers  # noqa: F401 - registers metalearner_lstm
from autometa.experiment import run_experiment

CONFIG = Path(__file__).resolve().parent / "omniglot_metalearner_lstm_5w1s.yaml"
OVERRIDES = ["outer.meta_batch=8", "run.validate_every=100", "run.val_tasks=100", "run.test_tasks=600",
             "run.time_budget_s=420", "run.threads=1", "run.progress=false", "run.checkpoint_every=100"]

if __name__ == "__main__":
    results = run_experiment(str(CONFIG), out_dir=sys.argv[1] if len(sys.argv) > 1 else None, overrides=OVERRIDES)
    print(json.dumps(results, default=str))
