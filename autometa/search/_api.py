"""``autometa.search``: one entry point over the Optuna, Ray Tune and NNI backends."""

from __future__ import annotations

import importlib
import math
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from autometa._params import did_you_mean
from autometa.errors import BackendUnavailableError, ConfigError, NumericalError, UnsupportedFeatureError
from autometa.search._common import Settings, TrialPruned
from autometa.search._result import SearchResult, TrialRecord
from autometa.search._space import SearchSpace, apply_params

BACKENDS = ("optuna", "ray", "nni")
SAMPLERS = {"optuna": ("tpe", "cmaes", "gp", "random", "grid", "nsga2"), "ray": ("tpe", "random"),
            "nni": ("tpe", "random", "evolution")}
PRUNERS = {"optuna": ("median", "successive_halving", "hyperband"), "ray": (), "nni": ("median",)}
SCHEDULERS = {"optuna": (), "ray": ("asha", "hyperband", "pbt"), "nni": ()}
_INSTALL = {"ray": "pip install 'autometa[ray]'", "nni": "pip install 'autometa[nni]'", "optuna": "pip install optuna"}
_REGRESSION_TASKS = ("sinusoid", "quadratic")


def _backend_module(backend: str):
    library = {"optuna": "optuna", "ray": "ray.tune", "nni": "nni"}[backend]
    try:
        importlib.import_module(library)
    except ImportError as exc:
        raise BackendUnavailableError(f"backend {backend!r} needs {library.split('.')[0]}: {_INSTALL[backend]} "
                                      f"({exc}).") from exc
    return importlib.import_module(f"autometa.search._{backend}")


def metric_value(results: dict, metric: str) -> float:
    """A number from ``run_experiment``'s results by dotted name (``best_val``, ``test.accuracy``, ...).

    A mapping found at the end of the path gives its ``value`` (``best_val``) or ``mean``
    (``test.accuracy``).
    """
    node = results
    for part in metric.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ConfigError(f"Metric {metric!r} is not in the experiment's results (keys: {sorted(results)}). "
                              f"Use e.g. best_val, test.accuracy, test.loss, wall_time_s.")
        node = node[part]
    if isinstance(node, dict):
        node = node.get("value", node.get("mean"))
    if node is None:
        raise ConfigError(f"Metric {metric!r} has no value in the experiment's results (was validation off?).")
    return float(node)


class ExperimentObjective:
    """The objective of a config sweep: apply the trial's parameters, run the experiment, read metrics.

    Each trial's parameters are nested overrides of the config (``learner.inner_lr``); the run
    goes to ``<out_dir>/trials/<number>`` when there is a results directory (on a Ray cluster,
    on the disk of the node that ran the trial). Validation metrics
    are reported to the trial after each validation and the run stops when the trial should be
    pruned (``run_experiment``'s callback).

    Args:
        config: the experiment config (defaults filled in).
        metrics: dotted names of the objective(s) in ``run_experiment``'s results.
        report_key: the key of the validation metric to report (``val_loss``, ``val_accuracy``).
        out_dir: results directory of the sweep, or None.
    """

    def __init__(self, config: dict, metrics: list[str], report_key: str, out_dir: Path | None):
        self.config = config
        self.metrics = metrics
        self.report_key = report_key
        self.out_dir = out_dir

    def __call__(self, trial) -> float | list[float]:
        from autometa.experiment import run_experiment

        config = apply_params(self.config, trial.params)
        config.setdefault("run", {})["progress"] = False
        trial_dir = None
        if self.out_dir is not None:
            trial_dir = self.out_dir / "trials" / f"{trial.number:04d}"
            if trial_dir.exists():  # a retried or resumed trial starts again from scratch
                shutil.rmtree(trial_dir)
        pruned_at, diverged_at = [], []

        def callback(step: int, metrics: dict) -> bool:
            value = metrics.get(self.report_key)
            if value is not None and not math.isfinite(value):  # stop a diverged run at once
                diverged_at.append((step, value))
                return True
            if value is not None:
                trial.report(value, step)
            if trial.should_prune():
                pruned_at.append(step)
                return True
            return False

        # a NumericalError of the run (a non-finite loss or meta-gradient, with its step) goes
        # through to the backend, which records the trial as diverged and goes on
        results = run_experiment(config, trial_dir, callback)
        trial.set_user_attr("wall_time_s", results.get("wall_time_s"))
        trial.set_user_attr("meta_train_time_s", results.get("meta_train_time_s"))
        if diverged_at:
            step, value = diverged_at[0]
            error = NumericalError(f"the validation {self.report_key[4:]} was {value} at step {step}")
            error.step = step
            raise error
        if pruned_at:
            raise TrialPruned(f"pruned at step {pruned_at[0]}")
        values = [metric_value(results, m) for m in self.metrics]
        if not all(math.isfinite(v) for v in values):
            error = NumericalError(f"the run ended with {dict(zip(self.metrics, values))}")
            error.step = results.get("steps")
            raise error
        return values if len(values) > 1 else values[0]


# what ``run_experiment`` returns besides ``test`` (per-task metrics) and ``best_val``
_RUN_NUMBERS = ("steps", "meta_batch", "meta_train_time_s", "meta_train_cpu_time_s", "test_time_s", "wall_time_s",
                "adaptation_time_per_task_s", "flops.meta_step", "flops.per_test_task")
_SUMMARIES = ("mean", "ci95", "std", "n")


def task_kind(config: dict) -> str:
    """``"regression"`` or ``"classification"``: the kind of the config's task family, read from its name."""
    return "regression" if str(config["tasks"].get("name")) in _REGRESSION_TASKS else "classification"


def config_metrics(config: dict) -> list[str]:
    """The metric names a run of ``config`` reports, as ``--metric`` accepts them.

    ``test.<m>`` is the mean over test tasks (``test.<m>.ci95``, ``.std``, ``.n`` also exist),
    ``best_val`` the best validation value (the config's selection metric), the rest are costs.
    """
    per_task = ["accuracy", "loss"] if task_kind(config) == "classification" else ["loss"]
    names = [f"test.{m}" for m in per_task] + ["best_val", "best_val.step"]
    return names + list(_RUN_NUMBERS)


def check_metrics(config: dict, metrics: list[str]) -> None:
    """Raise a ConfigError naming every metric a run of ``config`` does not report, before any trial."""
    known = config_metrics(config)
    accepted = set(known) | {f"{m}.{s}" for m in known if m.startswith("test.") for s in _SUMMARIES}
    problems = [f"{m!r}{did_you_mean(m, known)}" for m in metrics if m not in accepted]
    if problems:
        raise ConfigError(
            f"--metric {', '.join(problems)}: not reported by a run of this config ({task_kind(config)} tasks "
            f"'{config['tasks'].get('name')}'). Use one of {known} (test metrics also as .ci95, .std, .n).")
    if config["run"].get("validate_every") == 0 and any(m.split(".")[0] == "best_val" for m in metrics):
        raise ConfigError("--metric best_val needs validation, but the config sets run.validate_every=0. "
                          "Set run.validate_every, or use --metric test.loss.")


def _default_direction(metric: str) -> str:
    return "maximize" if "accuracy" in metric else "minimize"


def _config_objective(source, space: SearchSpace, metric, overrides, out_dir):
    from autometa.experiment import load_config

    config = load_config(source if isinstance(source, dict) else str(source), overrides)
    space.check_config(config)
    selection = "loss" if task_kind(config) == "regression" else "accuracy"
    metrics = [metric] if isinstance(metric, str) else list(metric or ["best_val"])
    check_metrics(config, metrics)
    names = [f"val_{selection}" if m == "best_val" else m for m in metrics]
    defaults = [_default_direction(n) for n in names]
    return ExperimentObjective(config, metrics, f"val_{selection}", out_dir), names, defaults


def search(objective_or_config, space=None, *, backend: str = "optuna", n_trials: int = 20,
           direction: str | None = None, directions: list[str] | None = None, seed: int | None = 0,
           sampler: str = "tpe", pruner: str | None = None, scheduler: str | None = None,
           storage: str | None = None, study_name: str = "autometa", out_dir: str | os.PathLike | None = None,
           resume: bool = False, timeout: float | None = None, address: str | None = None,
           connect_timeout: float = 30.0,
           auth_token: str | None = None, num_cpus: int | None = None, num_gpus: int | None = None,
           resources: dict | None = None,
           max_concurrent: int | None = None, max_retries: int = 0, sampler_options: dict | None = None,
           pruner_options: dict | None = None, metric: str | list[str] | None = None,
           overrides: list[str] | dict | None = None,
           on_trial_end: Callable[[TrialRecord], None] | None = None,
           before_trials: Callable[[], None] | None = None) -> SearchResult:
    """Search hyperparameters with Optuna (default), Ray Tune or NNI; one result format for all.

    Args:
        objective_or_config: ``objective(trial) -> float`` (a tuple of floats for several
            directions), or an experiment config (dict or YAML path): each trial then runs
            ``autometa.experiment.run_experiment`` on the config with the trial's parameters as
            nested overrides (``learner.inner_lr``) and returns ``metric``. A trial whose objective
            raises :class:`autometa.errors.NumericalError` (a run that diverged; its ``step`` is
            kept) or returns NaN / inf is recorded as pruned, with ``values`` None, a one-line
            ``error`` naming its parameters, the step and the remedy, and
            ``user_attrs["diverged_at_step"]``; the search goes on.
        space: the search space (dict, YAML path or :class:`SearchSpace`). Required.
        backend: ``"optuna"`` (embedded), ``"ray"`` (Ray Tune: local or a cluster) or ``"nni"``
            (NNI tuners in-process).
        n_trials: trials in total, counting those of a resumed search.
        direction / directions: ``"minimize"`` or ``"maximize"``; a list for multi-objective.
            Default: minimize (Python objective) or by metric name (accuracy: maximize).
        seed: seed of the sampler (None: not seeded).
        sampler: optuna: tpe, cmaes, gp, random, grid, nsga2; ray: tpe (OptunaSearch), random;
            nni: tpe, random, evolution.
        pruner: optuna: median, successive_halving, hyperband; nni: median (median-stop assessor).
        scheduler: ray: asha, hyperband, pbt (trial schedulers).
        storage: optuna: database URL or SQLite file; ray: ``storage_path`` (folder or URI).
            Default: inside ``out_dir``.
        study_name: the study (Optuna) or experiment (Ray) name within the storage.
        out_dir: results directory (storage, per-trial runs of a config sweep).
        resume: continue the search found in the storage instead of refusing to overwrite it.
            Finished trials are kept and count toward ``n_trials``; a trial that was running when
            the process died runs again with the same parameters under its own number, so the
            result holds exactly one record per number 0 .. n_trials-1 (``info["rerun"]`` names the
            numbers re-run; optuna keeps the interrupted attempts in its study and lists them in
            ``info["interrupted"]``; ray reads autometa's journal ``ray_trials.jsonl``, whatever
            state Tune's files are in).
        timeout: stop starting trials after this many seconds (optuna, nni).
        address, auth_token, num_cpus, num_gpus: ray: the cluster to join (None: start a local Ray),
            its authentication token (Ray >= 2.59 clusters; default ``$RAY_AUTH_TOKEN`` or the token
            file), CPUs and GPUs of a local Ray (default: what Ray detects; GPUs may be declared
            where there are none, to check how trials are scheduled).
        connect_timeout: ray: seconds to wait for the cluster at ``address`` to answer
            (:class:`ClusterUnreachableError` after that).
        resources: ray: per-trial resources, e.g. ``{"cpu": 1, "gpu": 0.25}`` (four trials share a
            GPU; each trial sees only its GPU, as ``cuda``). Default: the space file's
            ``resources:`` entry, else ``{"cpu": 1}``.
        max_concurrent: trials at once (ray: concurrent trials; optuna: threads).
        max_retries: ray: retries of a failed trial (``FailureConfig(max_failures=...)``).
        sampler_options, pruner_options: keyword arguments of the sampler (tuner), and of the
            pruner (optuna, nni) or the scheduler (ray; e.g. ``{"max_t": 50, "grace_period": 5}``).
        metric: config sweeps: dotted name(s) in the results, e.g. ``best_val`` (default; the
            validation metric the run selects on), ``test.accuracy``, ``meta_train_time_s``.
        overrides: config sweeps: ``key=value`` overrides applied before the search.
        on_trial_end: called with each finished :class:`TrialRecord` (progress displays); if it
            has a ``begin(directions, metric_names)`` method, that is called once before the
            first trial.
        before_trials: called once after every argument has been checked and before the
            backend starts (the CLI claims its results directory there, so that bad input
            writes nothing).

    Returns:
        A :class:`SearchResult`.

    Raises:
        ConfigError: invalid space, arguments, a space naming keys the config does not have, or
            a ``metric`` the config's runs do not report (checked before any trial).
        ClusterUnreachableError: ray: nothing answered at ``address`` within ``connect_timeout``.
        UnsupportedFeatureError: a combination the backend cannot do (Optuna pruners on Ray,
            schedulers off Ray, conditional or multi-objective spaces on NNI, ...).
        BackendUnavailableError: the backend's library is not installed.

    Example::

        def objective(trial):
            return (trial.params["x"] - 2) ** 2

        result = autometa.search(objective, {"x": {"float": [-10, 10]}}, n_trials=20)
        result.best_params  # {'x': 2.0...}
    """
    if space is None:
        raise ConfigError("search() needs a search space, e.g. {'inner_lr': {'float': [1e-3, 1.0], 'log': True}} "
                          "or a YAML path, or a shipped space such as maml_sinusoid.")
    space = SearchSpace.coerce(space)
    if resources is None:
        resources = space.resources  # `resources:` of the space file; the argument (CLI --resources) wins
    out = Path(out_dir).resolve() if out_dir is not None else None
    if callable(objective_or_config):
        objective, default_names, default_dirs = objective_or_config, None, None
        if metric is not None or overrides:
            raise ConfigError("metric and overrides apply to config sweeps; "
                              "a Python objective returns its value itself.")
    elif isinstance(objective_or_config, (dict, str, os.PathLike)):
        objective, default_names, default_dirs = _config_objective(objective_or_config, space, metric, overrides, out)
    else:
        raise ConfigError(f"search() needs an objective function or an experiment config (dict or YAML path). "
                          f"Got {type(objective_or_config).__name__}.")

    problems = []
    if backend not in BACKENDS:
        problems.append(f"backend must be one of {BACKENDS}. Got {backend!r}")
    if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1:
        problems.append(f"n_trials must be an integer >= 1. Got {n_trials!r}")
    if direction is not None and directions is not None:
        problems.append("give direction or directions, not both")
    dirs = list(directions) if directions is not None else [direction] if direction is not None else None
    if dirs is None:
        dirs = default_dirs if default_names else ["minimize"]
    bad = [d for d in dirs if d not in ("minimize", "maximize")]
    if bad or not dirs:
        problems.append(f"directions must be 'minimize' or 'maximize'. Got {dirs!r}")
    if default_names and len(dirs) != len(default_names):
        problems.append(f"{len(default_names)} metric(s) {default_names} but {len(dirs)} direction(s) {dirs}")
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        problems.append(f"max_retries must be an integer >= 0. Got {max_retries!r}")
    if isinstance(connect_timeout, bool) or not isinstance(connect_timeout, (int, float)) or not connect_timeout > 0:
        problems.append(f"connect_timeout must be a number of seconds > 0. Got {connect_timeout!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        problems.append(f"seed must be an integer or None. Got {seed!r}")
    if problems:
        raise ConfigError("Invalid search arguments:\n  - " + "\n  - ".join(problems))
    names = default_names or (["objective"] if len(dirs) == 1 else [f"objective_{i}" for i in range(len(dirs))])

    _check_support(backend, space, len(dirs), sampler, pruner, scheduler, address, resources, max_retries,
                   storage, timeout, auth_token, num_cpus, max_concurrent, num_gpus)
    module = _backend_module(backend)
    settings = Settings(
        n_trials=n_trials, directions=dirs, metric_names=names, seed=seed, sampler=sampler, pruner=pruner,
        scheduler=scheduler, storage=storage, study_name=study_name, out_dir=out, resume=resume, timeout=timeout,
        address=address, connect_timeout=float(connect_timeout), auth_token=auth_token, num_cpus=num_cpus,
        num_gpus=num_gpus, resources=resources, max_concurrent=max_concurrent, max_retries=max_retries,
        sampler_options=dict(sampler_options or {}), pruner_options=dict(pruner_options or {}),
        on_trial_end=on_trial_end)
    if before_trials is not None:
        before_trials()
    if on_trial_end is not None and hasattr(on_trial_end, "begin"):
        on_trial_end.begin(list(dirs), list(names))
    outcome = module.run(objective, space, settings)
    return SearchResult(backend, list(dirs), space, sorted(outcome.records, key=lambda r: r.number), list(names),
                        outcome.info)


def _check_support(backend, space, n_objectives, sampler, pruner, scheduler, address, resources, max_retries,
                   storage, timeout, auth_token, num_cpus, max_concurrent, num_gpus=None) -> None:
    """Raise for any argument the backend would otherwise ignore or misread."""
    if sampler not in SAMPLERS[backend]:
        raise ConfigError(f"Unknown sampler {sampler!r} for backend {backend!r}. Choose one of {SAMPLERS[backend]}.")
    if pruner is not None and pruner not in PRUNERS[backend]:
        if backend == "ray":
            raise UnsupportedFeatureError(
                f"Optuna pruners (pruner={pruner!r}) do not run inside Ray Tune. Use a Ray scheduler instead: "
                f"scheduler='asha' or 'hyperband'.")
        raise ConfigError(f"Unknown pruner {pruner!r} for backend {backend!r}. Choose one of {PRUNERS[backend]}.")
    if scheduler is not None and scheduler not in SCHEDULERS[backend]:
        if backend != "ray" and scheduler in SCHEDULERS["ray"]:
            raise UnsupportedFeatureError(
                f"scheduler={scheduler!r} is a Ray Tune trial scheduler; it needs backend='ray'. "
                + ("With Optuna, use pruner='median', 'successive_halving' or 'hyperband'."
                   if backend == "optuna" else "With NNI, use pruner='median'."))
        raise ConfigError(f"Unknown scheduler {scheduler!r}. backend='ray' offers {SCHEDULERS['ray']}.")
    if backend != "ray":
        for name, value in (("address", address), ("resources", resources), ("auth_token", auth_token),
                            ("num_cpus", num_cpus), ("num_gpus", num_gpus)):
            if value is not None:
                raise UnsupportedFeatureError(f"{name}= is a Ray Tune setting; backend {backend!r} runs trials "
                                              f"in this process. Use backend='ray', or drop {name}.")
        if max_retries:
            raise UnsupportedFeatureError(f"Retrying failed trials (max_retries={max_retries}) is offered by "
                                          f"backend='ray' only; on {backend!r} a failed trial is recorded and "
                                          f"the search goes on.")
    if backend == "ray" and timeout is not None:
        raise UnsupportedFeatureError("timeout is offered by the optuna and nni backends; with Ray, bound each "
                                      "trial's work instead (e.g. its steps).")
    if backend == "nni":
        if space.conditional:
            raise UnsupportedFeatureError(
                "The NNI backend does not take conditional spaces (parameters with `when`): NNI expresses them "
                "as nested choices that its tuners sample differently. Use backend='optuna' or 'ray' with "
                "sampler='tpe', or remove the conditions.")
        if n_objectives > 1:
            raise UnsupportedFeatureError("NNI tuners optimize one objective. Use backend='optuna' (or 'ray' "
                                          "with sampler='tpe') for multi-objective searches.")
        if max_concurrent not in (None, 1):
            raise UnsupportedFeatureError("The NNI backend runs one trial at a time in this process. Drop "
                                          "max_concurrent, or use backend='ray' for parallel trials.")
        if storage is not None:
            raise UnsupportedFeatureError("NNI keeps no study storage; its trials are journaled in out_dir "
                                          "(trials.jsonl). Pass out_dir instead of storage.")
    if backend == "ray" and n_objectives > 1 and (sampler != "tpe" or scheduler is not None):
        raise UnsupportedFeatureError("A multi-objective search on Ray needs sampler='tpe' (OptunaSearch) and "
                                      "no scheduler: Ray's schedulers and random search rank one metric.")
    if scheduler == "pbt" and space.conditional:
        raise UnsupportedFeatureError("PBT mutates parameters independently and cannot respect `when` "
                                      "conditions. Remove them, or use scheduler='asha'.")
    if scheduler == "pbt" and sampler != "random":
        raise UnsupportedFeatureError("PBT explores by mutating running trials and needs sampler='random' "
                                      "(Ray's own variant generator) to start them.")
