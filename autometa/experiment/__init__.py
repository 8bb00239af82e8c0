"""Experiments: configs, the run loop, evaluation with confidence intervals.

Comparisons of fillers (``autometa compare``) live one layer up, in :mod:`autometa.compare`.
"""

from autometa.experiment._config import DEFAULTS, deep_merge, load_config, parse_overrides, validate
from autometa.experiment._run import (
    Experiment,
    build_experiment,
    evaluate,
    evaluate_run,
    load_checkpoint,
    run_experiment,
)
from autometa.experiment._stats import format_ci, mean_ci

__all__ = [
    "DEFAULTS", "deep_merge", "load_config", "parse_overrides", "validate", "Experiment",
    "build_experiment", "evaluate", "evaluate_run", "load_checkpoint", "run_experiment", "format_ci", "mean_ci",
]
