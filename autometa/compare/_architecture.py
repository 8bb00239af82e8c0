"""The architecture study: DARTS against random search at equal budget and hand-crafted cells.

One config names the data (images searched on, split in halves by the search; the official test
images), the cell size shared by every cell arm, the search and retraining budgets and the arms.
For every seed, every arm sees the *same* training images (drawn from the seed), is retrained from
scratch with the *same* protocol and seed, and is tested on the *same* test images, so differences
between arms are paired per seed and per test image. Arms:

- ``kind: searched`` with a ``darts`` architecture: the DARTS search, then the derived cell;
- ``kind: searched`` with a ``random`` architecture and a ``budget``: random search over
  ``RandomCell.seed`` through :func:`autometa.search.search` (Optuna's random sampler); each trial
  trains the cell for ``random_search.proxy_steps`` steps on the weights half and scores it on
  ``random_search.proxy_images`` images of the α half; trials go on until the budget is spent:
  CPU seconds, or the name of a DARTS arm (its search's CPU time for the same seed, without the
  per-epoch diagnostics). The best cell is retrained like every other arm;
- ``kind: hand-crafted``: any other filler of the architecture slot (``sep_conv_cell``,
  ``resnet_cell``, ``conv4``, ``genotype``).

Statistics are those of every comparison (:mod:`autometa.compare._stats`): test images nested in
seeds (mean and 95% interval, t on seeds - 1 degrees of freedom with 3 or more seeds), and the
paired difference to the ``reference`` arm. Costs per arm: search CPU seconds, retraining CPU
seconds and the whole job process's CPU seconds (each job runs in its own process, one thread).

Example config: ``experiments/architecture_fashion_mnist.yaml`` (``study: architecture``); run it with
``autometa compare CONFIG --out DIR``. The directory gets ``report.json``, ``summary.md``,
``accuracy.png``, ``runs.jsonl`` (finished jobs, reused by a rerun with the same config) and one
run directory per arm and seed (``ARM/seedS``: genotype YAML and PNGs, metrics, test values).
"""

from __future__ import annotations

import copy
import inspect
import json
import os
import resource
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from autometa._params import did_you_mean
from autometa.compare._stats import format_interval, format_p, nested_difference, nested_interval
from autometa.compare._studies import arm_problems, open_study
from autometa.errors import AutometaError, ConfigError
from autometa.experiment._config import deep_merge, read_mapping

STUDY = "architecture"
DEFAULTS: dict = {
    "study": STUDY,           # marks the config for `autometa compare`
    "description": "",
    "data": {"name": "fashion_mnist", "search_images": 20000, "test_images": 10000},
    "seeds": [0, 1, 2],
    "cell": {},               # merged into every arm's architecture that takes these arguments
    "search": {"epochs": None, "steps_per_epoch": None, "eigenvalue_batches": 1, "eigenvalue_iterations": 50},
    "retrain": {"epochs": 10, "batch_size": 64, "lr": 0.025, "momentum": 0.9, "weight_decay": 3e-4,
                "grad_clip": 5.0, "max_steps": None},
    "random_search": {"proxy_steps": 20, "proxy_images": 1000, "batch_size": 64, "max_trials": 10_000},
    "reference": None,
    "arms": {},
}
ARM_KEYS = {"kind", "architecture", "budget", "label"}
KINDS = ("searched", "hand-crafted")


def arm_architecture(config: dict, arm: dict) -> dict:
    """The arm's filler spec with the study's ``cell`` keys that its filler takes filled in."""
    from autometa.slots import FILLERS

    spec = copy.deepcopy(arm.get("architecture") or {})
    spec = {"name": spec} if isinstance(spec, str) else spec
    cls = FILLERS["architecture"].get(str(spec.get("name", "")).lower())
    if cls is None:
        return spec  # build_filler reports the unknown name
    accepted = inspect.signature(cls).parameters
    return {**{k: v for k, v in config["cell"].items() if k in accepted}, **spec}


def load_architecture_study(source) -> dict:
    """Read a study config (YAML path or dict), fill defaults and validate it; every problem in one error."""
    from autometa.experiment._architecture import DATASETS
    from autometa.slots import build_filler

    raw = read_mapping(source, "Architecture study config", "experiments/architecture_fashion_mnist.yaml")
    problems = [f"unknown key {k!r}{did_you_mean(k, DEFAULTS)}" for k in raw if k not in DEFAULTS]
    config = deep_merge(copy.deepcopy(DEFAULTS), raw)
    if config["study"] != STUDY:
        problems.append(f"study must be {STUDY!r} for this runner. Got {config['study']!r}")
    for section in ("data", "search", "retrain", "random_search"):
        if not isinstance(config[section], dict):
            problems.append(f"{section} must be a mapping. Got {config[section]!r}")
            continue
        problems += [f"unknown key {section}.{k}{did_you_mean(k, DEFAULTS[section])} (known: "
                     f"{sorted(DEFAULTS[section])})" for k in config[section] if k not in DEFAULTS[section]]
    if not isinstance(config["cell"], dict):
        problems.append(f"cell must be a mapping of filler arguments. Got {config['cell']!r}")
        config["cell"] = {}
    data = config["data"] if isinstance(config["data"], dict) else {}
    if data.get("name") not in DATASETS:
        problems.append(f"data.name must be one of {list(DATASETS)}. Got {data.get('name')!r}")
    for key in ("search_images", "test_images"):
        value = data.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 2:
            problems.append(f"data.{key} must be an integer >= 2. Got {value!r}")
    for key in ("proxy_steps", "proxy_images", "batch_size", "max_trials"):
        value = config["random_search"].get(key) if isinstance(config["random_search"], dict) else None
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            problems.append(f"random_search.{key} must be an integer >= 1. Got {value!r}")
    more, arms = arm_problems(config, ARM_KEYS, KINDS, "{kind, architecture, budget, label}")
    problems += more
    for name, arm in arms.items():
        spec = arm_architecture(config, arm)
        try:
            filler = build_filler("architecture", copy.deepcopy(spec))
        except AutometaError as exc:
            problems.append(f"arm {name!r}: architecture: {exc}")
            continue
        is_random, budget = spec.get("name") == "random", arm.get("budget")
        if is_random and arm.get("kind") == "searched":
            if isinstance(budget, str):
                other = arms.get(budget)
                if not isinstance(other, dict) or arm_architecture(config, other).get("name") != "darts":
                    problems.append(f"arm {name!r}: budget must be CPU seconds or the name of a darts arm "
                                    f"(whose search time it matches). Got {budget!r}")
            elif not isinstance(budget, (int, float)) or isinstance(budget, bool) or budget <= 0:
                problems.append(f"arm {name!r}: a random search needs a budget: CPU seconds > 0 or the name of a "
                                f"darts arm. Got {budget!r}")
        elif budget is not None:
            problems.append(f"arm {name!r}: only a searched random arm takes a budget. Got {budget!r}")
        if spec.get("name") == "darts" and arm.get("kind") != "searched":
            problems.append(f"arm {name!r}: a darts architecture is kind: searched")
        if filler.slot != "architecture":  # pragma: no cover - build_filler checks the slot
            problems.append(f"arm {name!r}: not an architecture filler")
    if problems:
        raise ConfigError("Invalid architecture study config:\n  - " + "\n  - ".join(problems))
    return config


def run_config(config: dict, arm: dict, seed: int, architecture: dict | None = None) -> dict:
    """The ``kind: architecture`` run config of one arm and seed (see :mod:`autometa.experiment._architecture`)."""
    return {"kind": "architecture", "seed": seed, "data": copy.deepcopy(config["data"]),
            "architecture": architecture or arm_architecture(config, arm),
            "search": copy.deepcopy(config["search"]), "retrain": copy.deepcopy(config["retrain"]),
            "run": {"threads": 1, "progress": False}}


def random_search(config: dict, arm: dict, seed: int, budget_cpu_s: float) -> dict:
    """Random cells (``RandomCell.seed`` drawn by :func:`autometa.search.search`, random sampler) scored by a
    short proxy training, until ``budget_cpu_s`` CPU seconds are spent; the best trial and every trial."""
    from autometa.experiment._architecture import _images
    from autometa.search import search as search_api
    from autometa.search._optuna import quiet_logging
    from autometa.slots import build_filler
    from autometa.slots.architecture import train_network
    from autometa.slots.architecture._search import _halves

    quiet_logging()
    spec, rs = arm_architecture(config, arm), config["random_search"]
    x, y = _images(config["data"]["name"], True, config["data"]["search_images"], seed)
    w_half, a_half = _halves(len(x), seed)  # the halves of the DARTS search of the same seed
    a_half = a_half[: rs["proxy_images"]]
    trials: list[dict] = []

    def objective(trial):
        candidate = build_filler("architecture", {**spec, "seed": trial.suggest("seed")})
        start = time.process_time()
        out = train_network(candidate, x[w_half], y[w_half], x[a_half], y[a_half], epochs=1,
                            batch_size=rs["batch_size"], max_steps=rs["proxy_steps"], seed=seed, num_classes=10,
                            lr=config["retrain"]["lr"])
        trials.append({"cell_seed": candidate.seed, "proxy_accuracy": out["test_accuracy"],
                       "cpu_s": time.process_time() - start})
        return out["test_accuracy"]

    start = time.process_time()
    while time.process_time() - start < budget_cpu_s and len(trials) < rs["max_trials"]:
        search_api(objective, {"seed": {"int": [0, 1_000_000]}}, backend="optuna", sampler="random", n_trials=1,
                   seed=seed * 100_003 + len(trials), direction="maximize")
    best = max(trials, key=lambda t: t["proxy_accuracy"])  # the first among ties
    return {"cpu_s": time.process_time() - start, "budget_cpu_s": budget_cpu_s, "trials": len(trials),
            "best": best, "history": trials}


def run_job(job: dict) -> dict:
    """One arm and seed in a fresh process (one thread): search if the arm searches, retrain, test.

    Returns the run's ``results.json`` plus ``process`` (this process's CPU seconds and peak memory).
    """
    import shutil

    import torch

    from autometa.experiment._architecture import run_architecture

    os.environ.update(job.get("env", {}))
    torch.set_num_threads(1)
    wall = time.perf_counter()
    out = Path(job["dir"])
    if out.exists():  # an interrupted job starts again cleanly
        shutil.rmtree(out)
    config, arm, seed = job["config"], job["arm"], job["seed"]
    searched = None
    architecture = arm_architecture(config, arm)
    if architecture.get("name") == "random" and arm.get("kind") == "searched":
        searched = random_search(config, arm, seed, job["budget_cpu_s"])
        architecture = {**architecture, "seed": searched["best"]["cell_seed"]}
    results = run_architecture(run_config(config, arm, seed, architecture), out)
    if searched is not None:
        results["search"] = {k: v for k, v in searched.items() if k != "history"}
        (out / "random_search.json").write_text(json.dumps(searched, indent=2))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    results["process"] = {"cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
                          "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
                          "wall_s": round(time.perf_counter() - wall, 3), "pid": os.getpid()}
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    return results


def search_budget(result: dict) -> float:
    """The CPU seconds of a DARTS run's search without its per-epoch diagnostics."""
    search = result["search"]
    return float(search["cpu_s"] - search.get("diagnostics_cpu_s", 0.0))


def _jobs(config: dict, out: Path) -> list[dict]:
    """Every (arm, seed) job; arms that others' budgets wait for first, then the config's order."""
    waited = {arm.get("budget") for arm in config["arms"].values() if isinstance(arm.get("budget"), str)}
    order = sorted(config["arms"], key=lambda a: (a not in waited, list(config["arms"]).index(a)))
    return [{"arm_name": name, "arm": config["arms"][name], "seed": seed, "config": config,
             "dir": str(out / name / f"seed{seed}")} for seed in config["seeds"] for name in order]


def _execute(jobs: list[dict], done: dict, workers: int, record: Callable[[dict, dict], None], log) -> None:
    """Run the jobs not in ``done`` on ``workers`` fresh processes; a random search starts once the
    budget it matches is known (``done`` has that arm's run for the same seed)."""
    from autometa.compare._compare import WORKER_ENV, run_pool

    env = {**os.environ, **WORKER_ENV}

    def start(job):
        value = job["arm"].get("budget")
        if isinstance(value, str):  # the CPU seconds of the named arm's search for this seed
            found = done.get((value, job["seed"]))
            if found is None:
                return None
            value = search_budget(found)
        return run_job, ({**job, "env": env, **({} if value is None else {"budget_cpu_s": value})},)

    def on_done(job, result):
        done[(job["arm_name"], job["seed"])] = result
        record(job, result)
        return []

    run_pool([j for j in jobs if (j["arm_name"], j["seed"]) not in done], workers, start, on_done,
             failed=lambda job: log(f"{job['arm_name']} seed {job['seed']} failed; finished runs are kept in "
                                    f"runs.jsonl and reused by a rerun with the same --out"))


def summarize(config: dict, runs: dict[str, list[dict]], values: dict[str, np.ndarray]) -> dict:
    """Per arm: accuracy over test images nested in seeds, the paired difference to the reference, costs."""
    reference = config["reference"]
    arms = {}
    for name, frs in runs.items():
        arm = config["arms"][name]
        label = arm.get("label", name)
        entry = {"kind": arm["kind"], "label": label, "architecture": arm_architecture(config, arm),
                 "per_seed": {str(r["seed"]): float(np.mean(values[name][i])) for i, r in enumerate(frs)},
                 "interval": nested_interval(values[name], bounds=(0.0, 1.0)),
                 "cost": {"search_cpu_s": _mean([(r.get("search") or {}).get("cpu_s", 0.0) for r in frs]),
                          "retrain_cpu_s": _mean([r["retrain"]["cpu_s"] for r in frs]),
                          "process_cpu_s": _mean([r["process"]["cpu_s"] for r in frs]),
                          "peak_rss_mb": max(r["process"]["peak_rss_mb"] for r in frs),
                          "parameters": int(frs[0]["retrain"]["parameters"])},
                 "runs": [{"seed": r["seed"], "search": r.get("search"), "genotype": r.get("genotype"),
                           "dir": str(Path(name) / f"seed{r['seed']}")} for r in frs]}
        if name != reference:
            diff = nested_difference(values[name], values[reference])
            better = diff["mean"] > 0
            ref_label = config["arms"][reference].get("label", reference)
            if diff["level"] != "seeds":
                verdict = (f"{label} vs {ref_label}: {format_p(diff['p_value'])} over test images of these "
                           f"{diff['n_seeds']} seed(s); no between-seed claim (run 3 or more seeds)")
            elif diff["significant"]:
                verdict = (f"{label} is significantly {'better' if better else 'worse'} than {ref_label} "
                           f"({format_p(diff['p_value'])}, {diff['n_seeds']} seeds)")
            else:
                verdict = (f"no significant difference between {label} and {ref_label} "
                           f"({format_p(diff['p_value'])}, {diff['n_seeds']} seeds)")
            entry["vs_reference"] = {"reference": reference, **diff, "verdict": verdict}
        arms[name] = entry
    return {"study": STUDY, "description": config["description"], "data": config["data"], "cell": config["cell"],
            "search": config["search"], "retrain": config["retrain"], "random_search": config["random_search"],
            "seeds": config["seeds"], "reference": reference, "metric": "accuracy", "arms": arms}


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else 0.0


def format_table(report: dict) -> str:
    """A markdown table: accuracy (%) with its interval, the paired difference to the reference, costs."""
    lines = ["| arm | kind | test accuracy % [95% CI] | per seed | Δ vs reference (pts) [95% CI] | p | "
             "search CPU-s | retrain CPU-s | job CPU-s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for _name, a in report["arms"].items():
        diff = a.get("vs_reference")
        seeds = " / ".join(f"{100 * v:.2f}" for v in a["per_seed"].values())
        lines.append(f"| {a['label']} | {a['kind']} | {format_interval(a['interval'], 100)} | {seeds} | "
                     f"{format_interval(diff, 100) if diff else 'reference'} | "
                     f"{format_p(diff['p_value']) if diff else ''} | {a['cost']['search_cpu_s']:.0f} | "
                     f"{a['cost']['retrain_cpu_s']:.0f} | {a['cost']['process_cpu_s']:.0f} |")
    verdicts = [f"- {a['vs_reference']['verdict']}" for a in report["arms"].values() if "vs_reference" in a]
    return "\n".join(lines + [""] + verdicts)


def plot_accuracy(report: dict, path: Path) -> Path | None:
    """Each arm's test accuracy with its 95% interval and the per-seed accuracies (needs matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    arms = list(report["arms"].values())
    fig, ax = plt.subplots(figsize=(1.2 * len(arms) + 2, 3.5))
    for i, a in enumerate(arms):
        iv = a["interval"]
        low = iv["low"] if iv["low"] is not None else iv["mean"]
        high = iv["high"] if iv["high"] is not None else iv["mean"]
        ax.errorbar([i], [100 * iv["mean"]], yerr=[[100 * (iv["mean"] - low)], [100 * (high - iv["mean"])]],
                    fmt="o", capsize=4, color="C0" if a["kind"] == "searched" else "C1")
        ax.scatter([i] * len(a["per_seed"]), [100 * v for v in a["per_seed"].values()], s=10, color="gray")
    ax.set_xticks(range(len(arms)), [a["label"] for a in arms], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Architecture study: mean, 95% CI (seeds), per-seed points", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def run_architecture_study(source, out_dir: str | Path, log: Callable[[str], None] = print, resume: bool = False,
                           overwrite: bool = False, workers: int | None = None) -> dict:
    """Run every (arm, seed) of an architecture study; write ``report.json``, ``summary.md`` and ``accuracy.png``.

    Args:
        resume: keep the finished jobs of ``runs.jsonl`` in ``out_dir`` and run the rest (the config must
            be the one they were run with).
        overwrite: delete what ``out_dir`` holds first.
        workers: processes running jobs at once (default: the CPU cores this process may use).

    Returns the report (what ``report.json`` holds).

    Raises:
        ConfigError: an invalid config. ResultsDirError: ``out_dir`` holds other results, or resuming
            with a different config.
    """
    from autometa.compare._compare import _cores

    config = load_architecture_study(source)
    if workers is not None and (not isinstance(workers, int) or isinstance(workers, bool) or workers < 1):
        raise ConfigError(f"workers must be an integer >= 1. Got {workers!r}; leave it unset to use every core.")
    out, runs_path, done = open_study(out_dir, config, resume, overwrite, key=("arm", "seed"))
    if done:
        log(f"reusing {len(done)} finished run(s) of {runs_path}")
    started = time.perf_counter()

    def record(job: dict, result: dict) -> None:
        with runs_path.open("a") as f:
            f.write(json.dumps({"arm": job["arm_name"], "seed": job["seed"], "result": result}) + "\n")
        search = result.get("search") or {}
        extra = (f", {search['trials']} random cells in {search['cpu_s']:.0f} CPU-s" if "trials" in search else
                 f", search {search['cpu_s']:.0f} CPU-s, {search['epochs']} epoch(s), parameter-free ops "
                 f"{search['parameter_free']}" if search else "")
        log(f"{job['arm_name']} seed {job['seed']}: test accuracy {100 * result['test']['accuracy']['mean']:.2f}% "
            f"(job {result['process']['cpu_s']:.0f} CPU-s{extra})")

    jobs = _jobs(config, out)
    workers = workers or _cores()
    log(f"{sum((j['arm_name'], j['seed']) not in done for j in jobs)} job(s) to run on {workers} worker process(es)")
    _execute(jobs, done, workers, record, log)
    runs = {name: [done[(name, s)] | {"seed": s} for s in config["seeds"]] for name in config["arms"]}
    values = {name: np.array([json.loads((out / name / f"seed{s}" / "test_values.json").read_text())["accuracy"]
                              for s in config["seeds"]], dtype=np.float64) for name in config["arms"]}
    report = summarize(config, runs, values)
    report["workers"] = workers
    report["total_time_s"] = round(time.perf_counter() - started, 1)
    report["total_job_cpu_s"] = round(sum(r["process"]["cpu_s"] for frs in runs.values() for r in frs), 1)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    render_study(out)
    log(format_table(report))
    return report


run_study = run_architecture_study  # the name autometa.compare._studies calls


def render_study(out_dir) -> Path:
    """Write ``summary.md``, ``report.md`` and ``accuracy.png`` from ``out_dir/report.json``."""
    out = Path(out_dir)
    report = json.loads((out / "report.json").read_text())
    table = format_table(report)
    (out / "summary.md").write_text(table + "\n")
    config = json.loads((out / "config.json").read_text())
    lines = ["# autometa architecture study", ""]
    if config.get("description"):
        lines += [config["description"].strip(), ""]
    lines += [table, ""]
    if plot_accuracy(report, out / "accuracy.png") is not None:
        lines += ["![test accuracy per arm](accuracy.png)", ""]
    (out / "report.md").write_text("\n".join(lines))
    return out / "report.md"
