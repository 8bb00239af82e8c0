"""``autometa compare``: hand-crafted vs learned fillers of a slot, on identical tasks.

A comparison names a slot, a base experiment config shared by every filler, the fillers
(each a set of config overrides, marked ``hand-crafted`` or ``learned``), the reference filler
that differences are computed against, and seeds. Every filler is meta-trained on the same
task stream (same seed, same meta-batches) and tested on the same test tasks (checked by a
digest of the tasks' data), so differences are paired. Hand-crafted fillers may first have
their hyperparameters tuned through the search API, on validation tasks, so that a learned
filler is never compared with an untuned rule.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import yaml

from autometa.errors import ConfigError
from autometa.experiment._config import deep_merge, load_config, read_mapping
from autometa.experiment._run import run_experiment
from autometa.experiment._stats import mean_ci, paired_difference

KINDS = ("hand-crafted", "learned")
_REGRESSION = {"sinusoid", "quadratic"}


class PeakMemory:
    """Peak resident memory of this process above its level at entry, sampled every 10 ms.

    Reads ``/proc/self/statm`` (Linux); elsewhere ``peak_mb`` stays None rather than a guess.
    """

    def __init__(self, interval: float = 0.01):
        self.interval, self.peak_mb = interval, None
        self._stop = threading.Event()

    @staticmethod
    def _rss_mb() -> float | None:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
        except (OSError, ValueError, IndexError):
            return None

    def _watch(self):
        while not self._stop.wait(self.interval):
            rss = self._rss_mb()
            if rss is not None:
                self._peak = max(self._peak, rss)

    def __enter__(self):
        self._start = self._rss_mb()
        self._peak = self._start or 0.0
        if self._start is not None:
            self._thread = threading.Thread(target=self._watch, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self._start is not None:
            self._stop.set()
            self._thread.join()
            self.peak_mb = round(max(self._peak, self._rss_mb() or 0.0) - self._start, 1)
        return False


def load_compare_config(source) -> dict:
    """Read and validate a comparison config (YAML path or dict); every problem in one error."""
    raw = read_mapping(source, "Comparison config",
                       "experiments/compare_sinusoid_init.yaml (or no config for the quickstart)")
    problems = []
    seeds = raw.setdefault("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        problems.append(f"seeds must be a non-empty list of integers. Got {seeds!r}")
    comparisons = raw.get("comparisons")
    if not isinstance(comparisons, list) or not comparisons:
        problems.append("comparisons must be a non-empty list (each with name, slot, base, fillers, reference)")
        comparisons = []
    names = set()
    for i, comp in enumerate(comparisons):
        where = f"comparisons[{i}]"
        if not isinstance(comp, dict):
            problems.append(f"{where} must be a mapping")
            continue
        name = comp.get("name", f"comparison{i}")
        comp["name"] = name
        where = f"comparison {name!r}"
        if name in names:
            problems.append(f"{where}: the name is used twice")
        names.add(name)
        comp.setdefault("slot", "unnamed slot")
        fillers = comp.get("fillers")
        if not isinstance(fillers, dict) or len(fillers) < 2:
            problems.append(f"{where}: fillers must map at least two filler names to config overrides")
            continue
        if comp.get("reference") not in fillers:
            problems.append(f"{where}: reference must name one of the fillers {sorted(fillers)}. "
                            f"Got {comp.get('reference')!r}")
        for fname, filler in fillers.items():
            if not isinstance(filler, dict):
                problems.append(f"{where}: filler {fname!r} must be a mapping of config overrides")
                continue
            kind = filler.get("kind")
            if kind not in KINDS:
                problems.append(f"{where}: filler {fname!r} needs kind: hand-crafted or learned. Got {kind!r}")
            try:
                load_config(_filler_config(comp, filler, 0))
            except ConfigError as exc:
                problems.append(f"{where}: filler {fname!r}: {exc}".replace("\n", "\n    "))
            tune = filler.get("tune")
            if tune is not None:
                if kind != "hand-crafted":
                    problems.append(f"{where}: filler {fname!r}: only hand-crafted fillers are tuned "
                                    f"(the learned one learns)")
                if not isinstance(tune, dict) or "space" not in tune:
                    problems.append(f"{where}: filler {fname!r}: tune needs a space (and optionally trials, overrides)")
    if problems:
        raise ConfigError("Invalid comparison config:\n  - " + "\n  - ".join(problems))
    return raw


def _filler_config(comp: dict, filler: dict, seed: int) -> dict:
    overrides = {k: v for k, v in filler.items() if k not in ("kind", "tune", "label")}
    config = deep_merge(comp.get("base", {}), overrides)
    config["seed"] = seed
    config.setdefault("run", {})
    config["run"] = {**config["run"], "progress": False, "count_flops": True}
    return config


def _tune(comp: dict, fname: str, filler: dict, out: Path, log) -> dict:
    """Tune a hand-crafted filler's hyperparameters on validation tasks; returns the best values."""
    from autometa.search import apply_params, search

    tune = filler["tune"]
    config = _filler_config(comp, filler, comp["tune_seed"])
    config = deep_merge(config, tune.get("overrides", {}))
    log(f"tuning {fname} ({tune.get('trials', 8)} trials, Optuna TPE on validation tasks)")
    from autometa.search._optuna import optuna  # the backend imports Optuna; here only to quiet it

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # a line per trial would break the progress bar
    try:
        result = search(config, tune["space"], backend="optuna", n_trials=tune.get("trials", 8), seed=0,
                        out_dir=out / "tuning" / fname, resume=(out / "tuning" / fname).exists())
    finally:
        optuna.logging.set_verbosity(verbosity)
    best = dict(result.best_params)
    log(f"  best {fname}: {best} (validation {result.best_value:.4g})")
    return {"params": best, "value": result.best_value, "trials": len(result.trials),
            "filler": apply_params({k: v for k, v in filler.items() if k != "tune"}, best)}


def compare(config: dict | str | os.PathLike | None = None, out_dir: str | os.PathLike | None = None,
            progress: bool = True, render: bool = True) -> dict:
    """Run a comparison of fillers and write ``report.json``, ``report.md`` and plots.

    Args:
        config: a comparison config (dict or YAML path); None runs the built-in offline
            quickstart (sinusoid initialization, the inner-optimizer slot, few-shot
            classification on scikit-learn's digits, or Omniglot when it is found).
        out_dir: the results directory (default ``runs/compare-<time>``). Runs already finished
            there are reused, so an interrupted comparison continues where it stopped.
        progress: show progress bars and a table in the terminal.
        render: write ``report.md`` and the plots (``autometa report DIR`` does it later).

    Returns:
        The report: per comparison, per filler, the metric (mean ± 95% CI over seeds and over
        test tasks, per-seed numbers), the paired difference to the reference, and costs.

    Example::

        report = autometa.compare()              # the quickstart
        report = autometa.compare("experiments/compare_sinusoid_init.yaml", "runs/sine")
    """
    from tqdm.auto import tqdm

    if config is None:
        from autometa.experiment._quickstart import quickstart_config

        config = quickstart_config()
    spec = load_compare_config(config)
    out = Path(out_dir or Path("runs") / f"compare-{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    seeds = spec["seeds"]
    total = sum(len(c["fillers"]) * len(c.get("seeds", seeds)) for c in spec["comparisons"])
    bar = tqdm(total=total, desc="compare", disable=not progress, dynamic_ncols=True)
    log = bar.write if progress else (lambda msg: None)
    report = {"description": spec.get("description", ""), "seeds": seeds, "comparisons": []}
    started = time.perf_counter()
    for comp in spec["comparisons"]:
        comp_seeds = comp.get("seeds", seeds)
        comp["tune_seed"] = comp.get("tune_seed", 10_000 + comp_seeds[0])
        comp_dir = out / comp["name"]
        fillers, tuning = dict(comp["fillers"]), {}
        for fname, filler in comp["fillers"].items():
            if filler.get("tune"):
                tuning[fname] = _tune(comp, fname, filler, comp_dir, log)
                fillers[fname] = tuning[fname]["filler"]
        runs: dict[str, list[dict]] = {}
        for seed in comp_seeds:
            for fname, filler in fillers.items():
                run_dir = comp_dir / fname / f"seed{seed}"
                bar.set_description(f"{comp['name']}: {fname} (seed {seed})")
                if (run_dir / "results.json").exists():  # finished earlier: reuse
                    results = json.loads((run_dir / "results.json").read_text())
                    results.setdefault("peak_memory_mb", None)
                else:
                    if run_dir.exists():  # an interrupted run: start it again cleanly
                        import shutil

                        shutil.rmtree(run_dir)
                    with PeakMemory() as memory:
                        results = run_experiment(_filler_config(comp, filler, seed), run_dir)
                    results["peak_memory_mb"] = memory.peak_mb
                    (run_dir / "results.json").write_text(json.dumps(results, indent=2))
                results["values"] = json.loads((run_dir / "test_values.json").read_text())
                runs.setdefault(fname, []).append({"seed": seed, **results})
                bar.update(1)
        report["comparisons"].append(summarize(comp, comp_seeds, runs, tuning))
    bar.close()
    report["total_time_s"] = round(time.perf_counter() - started, 1)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    if render:
        from autometa.experiment._report import print_table, render_report

        render_report(out)
        if progress:
            print_table(report)
            print(f"report: {out / 'report.md'}")
    return report


def summarize(comp: dict, seeds: list[int], runs: dict[str, list[dict]], tuning: dict) -> dict:
    """Statistics and costs of one comparison from its runs (``runs[filler][i]`` is seed i)."""
    base_task = comp.get("base", {}).get("tasks", {}).get("name")
    metric = comp.get("metric") or ("loss" if base_task in _REGRESSION else "accuracy")
    higher_is_better = metric == "accuracy"
    reference = comp["reference"]
    ref_runs = runs[reference]
    for fname, frs in runs.items():
        for a, b in zip(frs, ref_runs):
            if a["test_tasks_digest"] != b["test_tasks_digest"]:
                raise ConfigError(f"Filler {fname!r} was tested on other tasks than {reference!r} (seed {a['seed']}); "
                                  f"all fillers of a comparison must share tasks settings and test seeds.")
    for a_name, a_runs in runs.items():  # equal budgets must have meant equal meta-training tasks
        for b_name, b_runs in runs.items():
            for a, b in zip(a_runs, b_runs):
                same_budget = a["steps"] == b["steps"] > 0 and a.get("meta_batch") == b.get("meta_batch")
                if same_budget and a["train_tasks_digest"] != b["train_tasks_digest"]:
                    raise ConfigError(f"Fillers {a_name!r} and {b_name!r} were meta-trained on different tasks "
                                      f"(seed {a['seed']}) although their budgets are equal; give them the same "
                                      f"tasks settings.")
    fillers = {}
    for fname, frs in runs.items():
        per_seed = _per_seed(frs, metric)
        pooled = [v for r in frs for v in r["values"][metric]]
        entry = {
            "kind": comp["fillers"][fname]["kind"],
            "label": comp["fillers"][fname].get("label", fname),
            "metric": metric,
            "per_seed": dict(zip((str(s) for s in seeds), per_seed)),
            "over_seeds": mean_ci(per_seed),
            "over_tasks": {k: v for k, v in mean_ci(pooled).items()},
            "tasks_per_seed": len(frs[0]["values"][metric]),
            "cost": {
                "meta_train_time_s": float(np.mean([r["meta_train_time_s"] for r in frs])),
                "meta_steps": int(np.mean([r["steps"] for r in frs])),
                "meta_train_gflop": _gflop(frs, "meta_step", lambda r: r["steps"]),
                "adaptation_time_per_task_ms": 1000 * float(np.mean([r["adaptation_time_per_task_s"] for r in frs])),
                "adaptation_gflop_per_task": _gflop(frs, "per_test_task", lambda r: 1),
                "peak_memory_mb": _max_or_none([r.get("peak_memory_mb") for r in frs]),
                "device": frs[0].get("device", "cpu"),
                "threads": frs[0].get("threads"),
            },
            "run_dirs": [str(Path(comp["name"]) / fname / f"seed{r['seed']}") for r in frs],
        }
        if fname in tuning:
            entry["tuned"] = {k: v for k, v in tuning[fname].items() if k != "filler"}
        if fname != reference:
            # per test task, the difference averaged over seeds (tasks are identical across fillers)
            diffs = np.mean([np.asarray(a["values"][metric]) - np.asarray(b["values"][metric])
                             for a, b in zip(frs, ref_runs)], axis=0)
            task_level = paired_difference(diffs, np.zeros_like(diffs))
            seed_diffs = [x - y for x, y in zip(per_seed, _per_seed(ref_runs, metric))]
            seed_level = paired_difference(seed_diffs, [0.0] * len(seed_diffs))
            consistent = all(d > 0 for d in seed_diffs) or all(d < 0 for d in seed_diffs)
            better = task_level["mean"] > 0 if higher_is_better else task_level["mean"] < 0
            significant = bool(task_level["significant"] and consistent)
            entry["vs_reference"] = {
                "reference": reference, "over_tasks": task_level, "over_seeds": seed_level,
                "per_seed": dict(zip((str(s) for s in seeds), seed_diffs)),
                "same_sign_every_seed": consistent, "significant": significant,
                "verdict": _verdict(fname, reference, significant, better, consistent, task_level["significant"]),
            }
        fillers[fname] = entry
    return {"name": comp["name"], "slot": comp["slot"], "description": comp.get("description", ""),
            "metric": metric, "higher_is_better": higher_is_better, "reference": reference,
            "task_family": base_task, "seeds": seeds, "fillers": fillers}


def _per_seed(frs, metric):
    return [float(np.mean(r["values"][metric])) for r in frs]


def _verdict(name, reference, significant, better, consistent, task_significant) -> str:
    if significant:
        return f"{name} is significantly {'better' if better else 'worse'} than {reference}"
    if task_significant and not consistent:
        return f"{name} vs {reference}: significant over tasks but not consistent across seeds"
    return f"no significant difference between {name} and {reference}"


def _gflop(frs, key, times):
    values = [r["flops"][key] * times(r) for r in frs if r.get("flops", {}).get(key) is not None]
    return float(np.mean(values)) / 1e9 if values else None


def _max_or_none(values):
    values = [v for v in values if v is not None]
    return max(values) if values else None
