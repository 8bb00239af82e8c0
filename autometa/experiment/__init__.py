"""Experiments: configs, the run loop, evaluation with confidence intervals."""

from autometa.experiment._compare import compare, load_compare_config
from autometa.experiment._config import DEFAULTS, deep_merge, load_config, parse_overrides, validate
from autometa.experiment._report import print_table, render_report
from autometa.experiment._run import (
    Experiment,
    build_experiment,
    evaluate,
    evaluate_run,
    load_checkpoint,
    run_experiment,
)
from autometa.experiment._stats import format_ci, mean_ci, paired_difference

__all__ = [
    "DEFAULTS", "deep_merge", "load_config", "parse_overrides", "validate", "Experiment",
    "build_experiment", "evaluate", "evaluate_run", "load_checkpoint", "run_experiment", "format_ci", "mean_ci",
    "paired_difference", "compare", "load_compare_config", "print_table", "render_report",
]
