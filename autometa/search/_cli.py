"""``autometa sweep``: search an experiment config's hyperparameters from the command line.

Wiring (in ``autometa/cli.py``)::

    from autometa.search._cli import add_sweep_parser
    add_sweep_parser(sub)   # sub = parser.add_subparsers(dest="command")

The subcommand sets ``func=run_sweep``; ``run_sweep(args)`` returns the exit status.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from autometa.errors import ConfigError


def _resources(text: str | None) -> dict | None:
    """``"cpu=1,gpu=0.5"`` -> ``{"cpu": 1.0, "gpu": 0.5}``."""
    if not text:
        return None
    out = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        try:
            out[key.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not key.strip():
            raise ConfigError(f"--resources must look like cpu=1,gpu=0.5. Got {text!r}.")
    return out


def add_sweep_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``sweep`` subcommand to an ``argparse`` subparsers object and return its parser."""
    sweep = subparsers.add_parser(
        "sweep", help="search hyperparameters of a config with Optuna, Ray Tune or NNI",
        description="Run a hyperparameter search over an experiment config. Each trial applies its parameters "
                    "as config overrides and runs the experiment; writes sweep.json, trials.csv and plots.")
    sweep.add_argument("config", help="experiment config (YAML), e.g. experiments/sinusoid_maml_k10.yaml")
    sweep.add_argument("--space", required=True, help="search space: a YAML file or a shipped space (maml_sinusoid)")
    sweep.add_argument("--backend", choices=("optuna", "ray", "nni"), default="optuna",
                       help="optuna (embedded, default), ray (local or --address cluster), nni (NNI tuners)")
    sweep.add_argument("--trials", type=int, default=20, help="trials in total, counting resumed ones (default 20)")
    sweep.add_argument("--out", help="results directory (default runs/<config>-sweep-<time>; needed with --resume)")
    sweep.add_argument("--resume", action="store_true", help="continue the sweep stored in --out")
    sweep.add_argument("--overwrite", action="store_true",
                       help="delete the sweep already in --out first (without it, an existing sweep is refused)")
    sweep.add_argument("--storage", help="optuna: database URL (default sqlite in --out); ray: storage_path")
    sweep.add_argument("--study-name", default="autometa", help="study (optuna) / experiment (ray) name")
    sweep.add_argument("--sampler", default="tpe",
                       help="optuna: tpe|cmaes|gp|random|grid|nsga2; ray: tpe|random; nni: tpe|random|evolution")
    sweep.add_argument("--pruner", help="optuna: median|successive_halving|hyperband; nni: median")
    sweep.add_argument("--scheduler", help="ray: asha|hyperband|pbt")
    sweep.add_argument("--metric", action="append", metavar="NAME",
                       help="objective(s) from the run's results: best_val (default), test.accuracy, test.loss, "
                            "meta_train_time_s, ... (repeat for multi-objective)")
    sweep.add_argument("--direction", action="append", choices=("minimize", "maximize"),
                       help="one per --metric (default: maximize accuracies, minimize the rest)")
    sweep.add_argument("--seed", type=int, default=0, help="sampler seed (default 0)")
    sweep.add_argument("--plugin", action="append", default=[], metavar="PATH",
                       help="import this Python file first, e.g. one that registers your own filler (repeatable)")
    sweep.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config value for every trial, e.g. --set outer.steps=500 (repeatable)")
    sweep.add_argument("--timeout", type=float, help="optuna/nni: start no trial after this many seconds")
    sweep.add_argument("--address", help="ray: cluster address host:port (default: start a local Ray)")
    sweep.add_argument("--connect-timeout", type=float, default=30.0,
                       help="ray: seconds to wait for the cluster at --address to answer (default 30)")
    sweep.add_argument("--auth-token", help="ray: the cluster's token (default $RAY_AUTH_TOKEN or ~/.ray/auth_token)")
    sweep.add_argument("--num-cpus", type=int, help="ray: CPUs of a local Ray (default: all)")
    sweep.add_argument("--num-gpus", type=int, help="ray: GPUs of a local Ray (default: those Ray detects)")
    sweep.add_argument("--resources", help="ray: resources per trial, e.g. cpu=1,gpu=0.25 (default: the space "
                                           "file's `resources:`, else cpu=1)")
    sweep.add_argument("--max-concurrent", type=int, help="trials at once (ray: concurrent trials; optuna: threads)")
    sweep.add_argument("--max-retries", type=int, default=0, help="ray: retries of a failed trial (default 0)")
    sweep.set_defaults(func=run_sweep)
    return sweep


class _Progress:
    """A tqdm bar over trials with the best value so far."""

    def __init__(self, total: int, backend: str):
        self.total, self.backend = total, backend
        self.bar, self.sign, self.best = None, 1.0, None
        self.counts = {"complete": 0, "pruned": 0, "failed": 0}

    def begin(self, directions: list[str], metric_names: list[str]) -> None:
        from tqdm.auto import tqdm

        self.sign = 1.0 if directions[0] == "minimize" else -1.0
        self.bar = tqdm(total=self.total, desc=f"sweep ({self.backend}, best {metric_names[0]})", unit="trial",
                        dynamic_ncols=True)

    def __call__(self, record) -> None:
        self.counts[record.state] = self.counts.get(record.state, 0) + 1
        if "diverged_at_step" in record.user_attrs:  # one line per diverged trial, above the bar
            self.bar.write(f"trial {record.number} {record.error}", file=sys.stderr)
        if record.state == "complete" and record.values:
            value = record.values[0]
            if self.best is None or self.sign * value < self.sign * self.best:
                self.best = value
        postfix = {"best": "-" if self.best is None else f"{self.best:.4g}", **self.counts}
        self.bar.set_postfix(postfix, refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_sweep(args: argparse.Namespace) -> int:
    """Run ``autometa sweep`` from parsed arguments; write the results; return the exit status."""

    from autometa.experiment._outdir import claim_out_dir
    from autometa.search._api import search

    if args.resume and not args.out:
        raise ConfigError("--resume needs --out: the results directory of the sweep to continue.")
    if args.resume and args.overwrite:
        raise ConfigError("--resume continues the sweep in --out and --overwrite deletes it; pass one of them.")
    out = Path(args.out or Path("runs") / f"{Path(args.config).stem}-sweep-{time.strftime('%Y%m%d-%H%M%S')}")
    directions = args.direction
    if directions and args.metric and len(directions) != len(args.metric):
        raise ConfigError(f"Give one --direction per --metric. Got {len(args.metric)} metric(s) and "
                          f"{len(directions)} direction(s).")
    if args.backend in ("optuna", "ray") or args.sampler == "tpe":
        from autometa.search._optuna import quiet_logging

        quiet_logging()  # Optuna's INFO line per trial would break the progress bar
    progress = _Progress(args.trials, args.backend)
    try:
        result = search(
            args.config, args.space, backend=args.backend, n_trials=args.trials,
            directions=directions, seed=args.seed, sampler=args.sampler, pruner=args.pruner,
            scheduler=args.scheduler, storage=args.storage, study_name=args.study_name, out_dir=out,
            resume=args.resume, timeout=args.timeout, address=args.address, connect_timeout=args.connect_timeout,
            auth_token=args.auth_token, num_cpus=args.num_cpus, num_gpus=args.num_gpus,
            resources=_resources(args.resources), max_concurrent=args.max_concurrent,
            max_retries=args.max_retries, metric=args.metric, overrides=args.set, on_trial_end=progress,
            # claimed once the arguments are checked: a bad argument writes nothing, and an existing
            # sweep (any backend) or another command's directory is refused without --resume/--overwrite
            before_trials=lambda: claim_out_dir(out, "sweep", resume=args.resume, overwrite=args.overwrite))
    finally:
        progress.close()
    files = result.write(out)
    counts = {s: sum(t.state == s for t in result.trials) for s in ("complete", "pruned", "failed")}
    counts["diverged"] = sum("diverged_at_step" in t.user_attrs for t in result.trials)  # among the pruned
    rerun = result.info.get("rerun")
    again = f"; trial(s) {rerun} re-run after an interruption" if rerun else ""
    print(f"{len(result.trials)} trials ({counts}) with {result.backend} in {result.info.get('wall_time_s')} s{again}")
    if result.completed and not result.multi_objective:
        best = result.best_trial
        print(f"best {result.metric_names[0]} = {best.value:.6g} (trial {best.number}): {best.params}")
    elif result.completed:
        print(f"Pareto front: trials {[t.number for t in result.best_trials]}")
    for name, path in files.items():
        print(f"{name}: {path}")
    return 0 if result.completed else 1
