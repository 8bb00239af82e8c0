"""``autometa compare``: hand-crafted, tuned and learned fillers of one slot, on identical tasks.

A comparison names one slot, a base experiment config shared by every filler (one learner and
one task distribution), the fillers, the reference filler that differences are computed
against, and seeds. A filler is either a set of config overrides (``learner: {...}``) or, in the
slot grammar, ``filler: {name: adam, lr: 0.01}``, which is placed at ``learner.<slot>`` of the
base config. Fillers that replace the whole learner (``learner: {name: maml}`` against
``{name: pretrained}``) name their slot among :func:`known_slots` (the filler slots, plus
``initialization``, ``embedding``, ``learner``, ``model-based learner``), one or several joined
by "and", optionally with a remark in parentheses; an unknown name is an
error with did-you-mean, checked before anything runs. A filler's ``kind`` is ``hand-crafted``,
``tuned`` (a hand-crafted rule whose hyperparameters are first searched on validation tasks;
needs a ``tune:`` block) or ``learned``.

Every filler is meta-trained on the same task stream (same seed, same meta-batches) and tested
on the same test tasks (checked by a digest of the tasks' data), so differences are paired.
Runs (a filler and a seed) execute as parallel worker processes, one thread each; a tuned
filler's seeds start when its tuning has finished. Each run records a digest of its resolved
config, and a rerun into the same directory reuses only runs whose digest matches.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import inspect
import json
import multiprocessing
import os
import re
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

import numpy as np
import yaml

import autometa
from autometa._params import did_you_mean
from autometa.compare._stats import nested_difference, nested_interval
from autometa.errors import ConfigError
from autometa.experiment._config import deep_merge, load_config, read_mapping
from autometa.experiment._outdir import claim_out_dir
from autometa.learners import check_learner_spec

KINDS = ("hand-crafted", "tuned", "learned")
_REGRESSION = {"sinusoid", "quadratic"}
_FILLER_KEYS = ("kind", "tune", "label", "filler")
_SLOT_KEY = re.compile(r"^[a-z_][a-z0-9_]*$")
#: what whole-learner fillers replace besides the filler slots of autometa.slots (MAML's learned
#: initialization against a pretrained one; a metric learner's embedding; the learner itself)
LEARNER_SLOTS = ("initialization", "embedding", "learner", "model-based learner")
_SLOT_JOIN = re.compile(r"\s*(?:,|\+|\band\b)\s*")
_SLOT_REMARK = re.compile(r"\s*\([^()]*\)\s*$")  # "model-based learner (memory)": the remark is free text

# The workers' environment, set before the fork server imports torch (children inherit it).
WORKER_ENV = {
    "OMP_WAIT_POLICY": "PASSIVE",            # OpenMP threads sleep instead of spinning on shared cores
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "MALLOC_MMAP_THRESHOLD_": "4000000000",  # large activations reuse freed heap pages instead of
    "MALLOC_TRIM_THRESHOLD_": "8000000000",  # being mapped and zeroed anew (NOTES.md: about 2x)
}


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
        if "slot" in comp:
            problems += [f"{where}: {p}" for p in _slot_problems(comp["slot"])]
        comp.setdefault("slot", "unnamed slot")
        fillers = comp.get("fillers")
        if not isinstance(fillers, dict) or len(fillers) < 2:
            problems.append(f"{where}: fillers must map at least two filler names to config overrides")
            continue
        if comp.get("reference") not in fillers:
            problems.append(f"{where}: reference must name one of the fillers {sorted(fillers)}. "
                            f"Got {comp.get('reference')!r}")
        for fname, filler in fillers.items():
            problems += [f"{where}: filler {fname!r}: {p}" for p in _filler_problems(comp, filler)]
    if problems:
        raise ConfigError("Invalid comparison config:\n  - " + "\n  - ".join(problems))
    return raw


def known_slots() -> tuple[str, ...]:
    """The slot names a comparison may name: every filler slot, then the whole-learner ones."""
    from autometa.slots import SLOTS

    return tuple(SLOTS) + tuple(s for s in LEARNER_SLOTS if s not in SLOTS)


def _slot_problems(slot) -> list[str]:
    """Problems of a comparison's ``slot:``: one known slot, or several joined by 'and' / ',' / '+',
    optionally followed by a remark in parentheses.

    Example::

        >>> _slot_problems("initialization and embedding")
        []
        >>> _slot_problems("initializaton")[0][:65]
        "slot 'initializaton' is unknown (did you mean 'initialization'?)."
    """
    known = known_slots()
    if not isinstance(slot, str) or not slot.strip():
        return [f"slot must name what the fillers replace: one of {list(known)}, or several joined by 'and'. "
                f"Got {slot!r}"]
    unknown = [part for part in _SLOT_JOIN.split(_SLOT_REMARK.sub("", slot).strip()) if part not in known]
    return [f"slot {slot!r}{'' if part == slot.strip() else f': {part!r}'} is unknown{did_you_mean(part, known)}. "
            f"A slot names what the fillers replace: one of {list(known)}, or several joined by 'and' (e.g. "
            f"'initialization and embedding'), optionally with a remark in parentheses; put longer text in "
            f"description:" for part in unknown[:1]]


def _filler_problems(comp: dict, filler) -> list[str]:
    if not isinstance(filler, dict):
        return ["must be a mapping (config overrides, or filler: {name: ..., ...}, plus kind)"]
    problems = []
    kind, tune = filler.get("kind"), filler.get("tune")
    if kind not in KINDS:
        problems.append(f"needs kind: hand-crafted, tuned or learned. Got {kind!r}")
    if kind == "tuned" and tune is None:
        problems.append("kind tuned needs a tune: block (space, and optionally trials and overrides)")
    if tune is not None:
        if kind != "tuned":
            problems.append(f"has a tune: block, so its kind is tuned (a tuned hand-crafted rule). Got kind {kind!r}")
        if not isinstance(tune, dict) or "space" not in tune:
            problems.append("tune needs a space (and optionally trials, overrides)")
    if "filler" in filler:
        slot = comp.get("slot")
        if not isinstance(slot, str) or not _SLOT_KEY.match(slot):
            problems.append(f"filler: is placed at learner.<slot>, so the comparison's slot must be a learner "
                            f"section name such as optimizer or loss. Got slot {slot!r}")
        spec = filler["filler"]
        if not isinstance(spec, dict) or "name" not in spec:
            problems.append(f"filler: must be a mapping with a name, e.g. {{name: adam, lr: 0.01}}. Got {spec!r}")
    if not problems:
        try:  # every filler is checked before any job starts, its learner section included
            config = load_config(filler_config(comp, filler, 0))
            check_learner_spec(config["learner"])
        except ConfigError as exc:
            problems.append(str(exc).replace("\n", "\n    "))
    return problems


def filler_config(comp: dict, filler: dict, seed: int) -> dict:
    """The experiment config of one filler and seed: the base, the filler's overrides, the seed.

    ``filler: {...}`` goes to ``learner.<slot>``; the run is quiet, counts FLOPs and uses one
    thread (a comparison runs several processes instead).

    Example::

        >>> comp = {"slot": "optimizer", "base": {"learner": {"name": "maml"}}}
        >>> filler_config(comp, {"kind": "hand-crafted", "filler": {"name": "adam", "lr": 0.01}}, 0)["learner"]
        {'name': 'maml', 'optimizer': {'name': 'adam', 'lr': 0.01}}
    """
    overrides = {k: v for k, v in filler.items() if k not in _FILLER_KEYS}
    if "filler" in filler:  # explicit overrides (e.g. tuned values of learner.<slot>.lr) win
        overrides = deep_merge({"learner": {comp["slot"]: copy.deepcopy(filler["filler"])}}, overrides)
    config = deep_merge(comp.get("base", {}), overrides)
    config["seed"] = seed
    config["run"] = {**config.get("run", {}), "progress": False, "count_flops": True, "threads": 1}
    return config


def config_digest(config: dict) -> str:
    """sha256 of the canonical JSON of a resolved config and the autometa version."""
    text = json.dumps({"config": config, "autometa": autometa.__version__}, sort_keys=True,
                      separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _tune_job(comp: dict, fname: str, filler: dict, comp_dir: Path) -> dict:
    tune = filler["tune"]
    config = load_config(deep_merge(filler_config(comp, filler, comp["tune_seed"]), tune.get("overrides", {})))
    trials = int(tune.get("trials", 8))
    digest = config_digest({"tune": config, "space": tune["space"], "trials": trials, "sampler": "optuna-tpe-0",
                            **({"metric": tune["metric"]} if tune.get("metric") else {})})
    return {"kind": "tune", "comp": comp["name"], "filler": fname, "dir": str(comp_dir / "tuning" / fname),
            "config": config, "space": tune["space"], "trials": trials, "digest": digest,
            "metric": tune.get("metric")}  # e.g. test.loss of tuning tasks, for a rule with nothing to meta-train


def _run_job(comp: dict, fname: str, filler: dict, seed: int, comp_dir: Path) -> dict:
    config = load_config(filler_config(comp, filler, seed))
    return {"kind": "run", "comp": comp["name"], "filler": fname, "seed": seed,
            "dir": str(comp_dir / fname / f"seed{seed}"), "config": config, "digest": config_digest(config)}


def _finished(job: dict) -> tuple[dict | None, str | None]:
    """(earlier results, None) when ``job`` finished before with the same digest, else (None, why not)."""
    path = Path(job["dir"]) / ("results.json" if job["kind"] == "run" else "tuned.json")
    if not Path(job["dir"]).exists():
        return None, None
    if not path.is_file():
        return None, "interrupted"
    try:
        results = json.loads(path.read_text())
    except ValueError:
        return None, "unreadable results"
    if results.get("config_digest") != job["digest"]:
        return None, "config changed" if results.get("config_digest") else "no config digest (older autometa)"
    if job["kind"] == "run":
        if not (Path(job["dir"]) / "test_values.json").is_file():
            return None, "test values missing"
    return results, None


@contextlib.contextmanager
def _environment(values: dict):
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _executor(workers: int) -> ProcessPoolExecutor:
    """A pool that starts a fresh process per job, forked from a server that has torch loaded."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["autometa.compare._worker"])
    with _environment(WORKER_ENV):  # the fork server inherits it; this process keeps its own
        from multiprocessing import forkserver

        forkserver.ensure_running()
    from autometa.compare._worker import die_with

    return ProcessPoolExecutor(max_workers=workers, mp_context=ctx, max_tasks_per_child=1, initializer=die_with,
                               initargs=(os.getpid(),))


def run_pool(jobs: list[dict], workers: int, start, on_done, failed) -> None:
    """Run ``jobs`` on ``workers`` fresh processes, at most ``workers`` at a time, in list order.

    ``start(job)`` returns ``(function, args)`` to submit, or None while the job must wait (a random
    search for the budget of the arm it matches); ``on_done(job, result)`` returns the jobs that the
    result releases, which start before the rest. If a job fails, the others are cancelled, the
    message ``failed(job)`` is logged by the caller's means and the error is raised.

    Raises:
        ConfigError: jobs are left waiting while none runs (what they wait for never comes).
    """
    ready = list(jobs)
    if not ready:
        return
    with _executor(workers) as pool:
        running = {}
        while ready or running:
            for job in list(ready):
                if len(running) >= workers:
                    break
                submission = start(job)
                if submission is None:
                    continue
                ready.remove(job)
                function, args = submission
                running[pool.submit(function, *args)] = job
            if not running:
                raise ConfigError(f"{len(ready)} job(s) wait for results that no job provides: {ready[:3]}.")
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                job = running.pop(future)
                try:
                    result = future.result()
                except BaseException:
                    for other in running:
                        other.cancel()
                    failed(job)
                    raise
                ready[:0] = on_done(job, result)


def _execute(jobs: list[dict], workers: int, on_done, log) -> None:
    """Run the comparison's ``jobs`` (see :func:`run_pool`); ``on_done(job, result)`` returns the jobs
    that the result releases (a tuned filler's seeds, which must wait for its tuning)."""
    from autometa._plugins import loaded_plugins
    from autometa.compare._worker import run_job

    context = {"env": {**os.environ, **WORKER_ENV}}  # the caller's environment now, not the fork server's
    run_pool([{**job, **context} for job in jobs], workers,
             start=lambda job: (run_job, (job, loaded_plugins())),  # the user's --plugin files too
             on_done=lambda job, result: [{**j, **context} for j in on_done(job, result)],
             failed=lambda job: log(f"{job['comp']}: {job['filler']} {_job_name(job)} failed; finished runs are "
                                    f"kept and reused by a rerun with the same --out"))


def _estimated_cost(job: dict) -> float:
    """A rough relative cost, to start long jobs first (tuning, which others wait for, before all)."""
    if job["kind"] == "tune":
        return float("inf")
    config = job["config"]
    tasks = config["tasks"]
    examples = tasks.get("ways", 1) * (tasks.get("shots", 5) + tasks.get("queries", 5))
    conv = str(config["model"].get("name", "")).startswith("conv")
    return (config["outer"]["steps"] * config["outer"]["meta_batch"] + config["run"]["test_tasks"]) * examples \
        * (30 if conv else 1)


def _cores() -> int:
    """The CPU cores this process may use (``taskset`` and container limits included)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _job_name(job: dict) -> str:
    return "tuning" if job["kind"] == "tune" else f"seed {job['seed']}"


def compare(config: dict | str | os.PathLike | None = None, out_dir: str | os.PathLike | None = None,
            progress: bool = True, render: bool = True, workers: int | None = None,
            overwrite: bool = False, quiet: bool = False) -> dict:
    """Run a comparison of fillers and write ``report.json``, ``report.md`` and plots.

    Args:
        config: a comparison config (dict or YAML path); None runs the built-in offline
            quickstart (sinusoid initialization, the inner-optimizer slot, few-shot
            classification on scikit-learn's digits, or Omniglot when it is found).
        out_dir: the results directory (default ``runs/compare-<time>``). Runs finished there
            with the same resolved config (by digest) are reused; runs whose config changed are
            recomputed, and the log says which.
        progress: show progress bars and a table in the terminal.
        render: write ``report.md`` and the plots (``autometa report DIR`` does it later).
        workers: worker processes (default: the CPU cores this process may use); each run uses
            one thread.
            The numbers do not depend on it.
        overwrite: delete what ``out_dir`` holds first.
        quiet: print only the report's path (and errors).

    Returns:
        The report: per comparison, per filler, the metric (mean and 95% interval with tasks
        nested in seeds), the paired difference to the reference, and costs.

    Raises:
        ConfigError: an invalid comparison config.
        ResultsDirError: ``out_dir`` is a file or holds another command's results.

    Example::

        report = autometa.compare()              # the quickstart
        report = autometa.compare("experiments/compare_sinusoid_init.yaml", "runs/sine")
    """
    from tqdm.auto import tqdm

    if workers is not None and (not isinstance(workers, int) or isinstance(workers, bool) or workers < 1):
        raise ConfigError(f"workers must be an integer >= 1. Got {workers!r}; leave it unset to use every core.")
    notes = []
    if config is None:
        from autometa.compare._quickstart import omniglot_available, quickstart_config

        found = omniglot_available()
        if not found:
            notes.append("Omniglot was not found ($AUTOMETA_DATA or ~/.cache/autometa), so few-shot "
                         "classification uses scikit-learn's digits; `autometa data omniglot` fetches it.")
        config = quickstart_config(use_omniglot=found)
    from autometa.compare._studies import study_module, study_name

    study = study_name(config)
    if study is not None:  # a study (noisy labels, reward, augmentation, ...): its own runner and report
        out = Path(out_dir or Path("runs") / f"compare-{time.strftime('%Y%m%d-%H%M%S')}")
        run_study = study_module(study).run_study
        options = {"workers": workers} if "workers" in inspect.signature(run_study).parameters else {}
        result = run_study(config, out, log=(lambda _: None) if quiet else print, resume=not overwrite,
                           overwrite=overwrite, **options)
        print(f"report: {out / 'report.md'}")
        return result
    spec = load_compare_config(config)
    out = claim_out_dir(out_dir or Path("runs") / f"compare-{time.strftime('%Y%m%d-%H%M%S')}", "compare",
                        resume=True, overwrite=overwrite)
    (out / "compare.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    workers = workers or _cores()
    progress = progress and not quiet
    seeds = spec["seeds"]

    total = sum(len(c["fillers"]) * len(c.get("seeds", seeds)) + sum(1 for f in c["fillers"].values() if
                                                                      f.get("tune")) for c in spec["comparisons"])
    bar = tqdm(total=total, desc="compare", disable=not progress, dynamic_ncols=True)
    log = bar.write if progress else (lambda msg: None)
    for note in notes if not quiet else []:
        log(note) if progress else print(note)
    started = time.perf_counter()

    comps = {c["name"]: c for c in spec["comparisons"]}
    results: dict[tuple, dict] = {}  # (comp, filler, seed) -> run results; (comp, filler, "tune") -> tuning
    reused, redone, todo = [], [], []

    def plan_runs(comp, fname, filler):
        for seed in comp["seeds_"]:
            job = _run_job(comp, fname, filler, seed, out / comp["name"])
            earlier, why = _finished(job)
            if earlier is not None:
                results[(comp["name"], fname, seed)] = earlier
                reused.append(f"{comp['name']}/{fname}/seed{seed}")
                bar.update(1)
            else:
                if why:
                    redone.append(f"{comp['name']}/{fname}/seed{seed} ({why})")
                yield job

    def tuned_filler(comp, fname, filler, tuned):
        from autometa.search import apply_params

        return apply_params({k: v for k, v in filler.items() if k != "tune"}, tuned["params"])

    for comp in spec["comparisons"]:
        comp["seeds_"] = comp.get("seeds", seeds)
        comp["tune_seed"] = comp.get("tune_seed", 10_000 + comp["seeds_"][0])
        for fname, filler in comp["fillers"].items():
            if filler.get("tune"):
                job = _tune_job(comp, fname, filler, out / comp["name"])
                earlier, why = _finished(job)
                if earlier is not None:
                    results[(comp["name"], fname, "tune")] = earlier
                    reused.append(f"{comp['name']}/tuning/{fname}")
                    bar.update(1)
                    todo += plan_runs(comp, fname, tuned_filler(comp, fname, filler, earlier))
                else:
                    if why:
                        redone.append(f"{comp['name']}/tuning/{fname} ({why})")
                    todo.insert(0, job)  # tuning is on the critical path: start it first
            else:
                todo += plan_runs(comp, fname, filler)
    todo.sort(key=_estimated_cost, reverse=True)  # longest first, so no long run starts last
    if reused:
        log(f"reusing {len(reused)} finished run(s) whose config digest matches: {', '.join(reused)}")
    if redone:
        log(f"recomputing {len(redone)} run(s): {', '.join(redone)}")

    def on_done(job, result):
        comp = comps[job["comp"]]
        if job["kind"] == "tune":
            results[(comp["name"], job["filler"], "tune")] = result
            log(f"  tuned {comp['fillers'][job['filler']].get('label', job['filler'])}: {result['params']} "
                f"(validation {result['value']:.4g}, {result['trials']} trials)")
            bar.update(1)
            filler = tuned_filler(comp, job["filler"], comp["fillers"][job["filler"]], result)
            return list(plan_runs(comp, job["filler"], filler))
        results[(comp["name"], job["filler"], job["seed"])] = result
        bar.set_description(f"{comp['name']}: {job['filler']} (seed {job['seed']}) done")
        bar.update(1)
        return []

    if todo:
        log(f"running {len(todo)} job(s) on {min(workers, len(todo))} worker process(es), one thread each")
    _execute(todo, workers, on_done, log)
    bar.close()

    report = {"description": spec.get("description", ""), "seeds": seeds, "workers": workers, "notes": notes,
              "reused_runs": reused, "recomputed_runs": redone, "comparisons": []}
    for comp in spec["comparisons"]:
        runs, tuning = {}, {}
        for fname in comp["fillers"]:
            if (comp["name"], fname, "tune") in results:
                tuning[fname] = results[(comp["name"], fname, "tune")]
            runs[fname] = []
            for seed in comp["seeds_"]:
                r = dict(results[(comp["name"], fname, seed)])
                r["values"] = json.loads((out / comp["name"] / fname / f"seed{seed}" / "test_values.json").read_text())
                runs[fname].append({"seed": seed, **r})
        report["comparisons"].append(summarize(comp, comp["seeds_"], runs, tuning))
    report["total_time_s"] = round(time.perf_counter() - started, 1)
    report["total_worker_cpu_s"] = round(sum(r.get("process", {}).get("cpu_s") or 0 for r in results.values()), 1)
    report["dataset"] = [c["task_family"] for c in report["comparisons"]]
    (out / "report.json").write_text(json.dumps(report, indent=2))
    if render:
        from autometa.compare._report import print_table, render_report

        render_report(out)
        if progress:
            print_table(report)
    if render or not quiet:
        print(f"report: {out / ('report.md' if render else 'report.json')}")
    return report


def summarize(comp: dict, seeds: list[int], runs: dict[str, list[dict]], tuning: dict) -> dict:
    """Statistics and costs of one comparison from its runs (``runs[filler][i]`` is seed i)."""
    base_task = comp.get("base", {}).get("tasks", {}).get("name")
    metric = comp.get("metric") or ("loss" if base_task in _REGRESSION else "accuracy")
    higher_is_better = metric == "accuracy"
    bounds = (0.0, 1.0) if metric == "accuracy" else None
    reference = comp["reference"]
    ref_runs = runs[reference]
    labels = {f: comp["fillers"][f].get("label", f) for f in runs}
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

    def table(frs):
        return np.array([r["values"][metric] for r in frs], dtype=np.float64)  # (seeds, tasks)

    fillers = {}
    for fname, frs in runs.items():
        values = table(frs)
        entry = {
            "kind": comp["fillers"][fname]["kind"],
            "label": labels[fname],
            "metric": metric,
            "per_seed": {str(s): float(v) for s, v in zip(seeds, values.mean(axis=1))},
            "interval": nested_interval(values, bounds=bounds),
            "tasks_per_seed": int(values.shape[1]),
            "cost": _cost(frs, tuning.get(fname)),
            "run_dirs": [str(Path(comp["name"]) / fname / f"seed{r['seed']}") for r in frs],
        }
        if fname in tuning:
            entry["tuned"] = {k: tuning[fname][k] for k in ("params", "value", "trials")}
        if fname != reference:
            diff = nested_difference(values, table(ref_runs))
            better = diff["mean"] > 0 if higher_is_better else diff["mean"] < 0
            entry["vs_reference"] = {"reference": reference, **diff,
                                     "verdict": _verdict(labels[fname], labels[reference], diff, better)}
        fillers[fname] = entry
    return {"name": comp["name"], "slot": comp["slot"], "description": comp.get("description", ""),
            "metric": metric, "higher_is_better": higher_is_better, "reference": reference,
            "task_family": base_task, "seeds": seeds, "fillers": fillers}


def _cost(frs: list[dict], tuned: dict | None) -> dict:
    """A filler's cost per seed (mean over seeds) from its own processes; tuning counted apart."""
    def mean(key_fn):
        values = [key_fn(r) for r in frs]
        values = [v for v in values if v is not None]
        return float(np.mean(values)) if values else None

    cost = {
        "meta_steps": int(np.mean([r["steps"] for r in frs])),
        "meta_batch": frs[0].get("meta_batch"),
        "cpu_s": mean(lambda r: r.get("process", {}).get("cpu_s")),
        "meta_train_cpu_s": mean(lambda r: r.get("meta_train_cpu_time_s")),
        "meta_train_gflop": _gflop(frs, "meta_step", lambda r: r["steps"]),
        "adaptation_gflop_per_task": _gflop(frs, "per_test_task", lambda r: 1),
        "peak_rss_mb": max((r.get("process", {}).get("peak_rss_mb") or 0 for r in frs), default=None) or None,
        "wall_s": mean(lambda r: r.get("process", {}).get("wall_s")),
        "device": frs[0].get("device", "cpu"),
        "threads": frs[0].get("threads"),
    }
    if tuned is not None:
        cost["tuning_trials"] = tuned.get("trials")
        cost["tuning_cpu_s"] = tuned.get("process", {}).get("cpu_s")
    return cost


def _verdict(label: str, reference: str, diff: dict, better: bool) -> str:
    from autometa.compare._stats import format_p

    seeds = diff["n_seeds"]
    if diff["level"] == "tasks":
        given = "differs from" if diff["significant_given_seeds"] else "does not differ clearly from"
        return (f"{label} {given} {reference} on the test tasks of these {seeds} seed(s) "
                f"({format_p(diff['p_value'])}); no between-seed claim is possible with {seeds} seed(s) "
                f"(run 3 or more)")
    if diff["significant"]:
        return f"{label} is significantly {'better' if better else 'worse'} than {reference} " \
               f"({format_p(diff['p_value'])}, {seeds} seeds)"
    return f"no significant difference between {label} and {reference} ({format_p(diff['p_value'])}, {seeds} seeds)"


def _gflop(frs, key, times):
    values = [r["flops"][key] * times(r) for r in frs if r.get("flops", {}).get(key) is not None]
    return float(np.mean(values)) / 1e9 if values else None
