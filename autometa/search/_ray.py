"""The Ray Tune backend: one machine or a cluster. Ray is imported here, lazily.

Only the current ``ray.tune`` API is used (``Tuner``, ``TuneConfig``, ``RunConfig``,
``FailureConfig``, ``tune.report``, ``tune.get_checkpoint``, ``Tuner.restore``); no ``ray.air``.

Where Ray runs:

- No ``address``: a local Ray is started for the search (``num_cpus`` CPUs, a 128 MB object
  store, dashboard off) and shut down afterwards; an already initialized Ray is reused and left
  running.
- ``address="host:port"`` (or ``"auto"``): an existing cluster. Ray >= 2.59 has token
  authentication: with ``RAY_AUTH_MODE=token`` (Ray 2.60 warns and leaves it off otherwise),
  ``ray get-auth-token --generate`` writes ``~/.ray/auth_token`` and every ``ray start`` and
  driver must present that token. The driver finds it in ``$RAY_AUTH_TOKEN``, in the file
  ``$RAY_AUTH_TOKEN_PATH``, or in ``~/.ray/auth_token`` (present on the head machine). From
  another machine, copy it: ``export RAY_AUTH_TOKEN=$(ssh head cat ~/.ray/auth_token)``, or pass
  ``auth_token=...`` (CLI ``--auth-token``; set as ``RAY_AUTH_TOKEN`` while connecting). A
  missing or wrong token raises a :class:`ConfigError` that says this. (The tests start the
  nodes and the driver with ``RAY_AUTH_MODE=token`` in the environment.)

Searchers: ``tpe`` (Optuna's TPE through ``ray.tune.search.optuna.OptunaSearch``, define-by-run,
so conditional spaces and several objectives work) and ``random`` (Ray's variant generator;
for conditional spaces every parameter is drawn and inactive ones are dropped inside the
trial). Schedulers: ``asha``, ``hyperband`` (stop poor trials after ``trial.report``), ``pbt``
(exploits and mutates running trials; the objective must ``report(..., checkpoint=dir)`` and
start from ``trial.last_checkpoint()``; ``seed`` fixes the initial samples, while Ray's PBT draws
its mutations from Python's global ``random``). Resources per trial: ``resources={"cpu": 1,
"gpu": 0.5}`` (fractional GPUs share a device). Failed trials are retried ``max_retries`` times
(``FailureConfig(max_failures=...)``), from their last checkpoint when there is one.

Workers are reused between trials (``TuneConfig(reuse_actors=True)``): a trial's imports (torch,
autometa) are paid once per worker rather than once per trial, which made a 8-trial sweep of a
torch-importing objective about 4x faster here. State an objective leaves in its process
(``torch.set_num_threads``, module globals) carries over to the next trial on that worker.

Experiment state is saved after every step of Tune's controller (``TUNE_GLOBAL_CHECKPOINT_S=0``
unless you set it), so a restored sweep does not re-run trials that had finished.

Storage: ``<out_dir>/ray/<study_name>`` (or ``storage`` as Ray's ``storage_path``); rerunning
with ``resume=True`` calls ``Tuner.restore`` and finishes the unfinished trials.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from pathlib import Path

import ray
from ray import tune

from autometa.errors import ConfigError
from autometa.search._common import BackendRun, Settings, TrialDiverged, TrialPruned, TrialRecord, error_text
from autometa.search._space import SearchSpace, parse_space
from autometa.search._trial import Trial, run_objective

SCHEDULER_DEFAULTS = {"asha": {"max_t": 100, "grace_period": 1, "reduction_factor": 3},
                      "hyperband": {"max_t": 100, "reduction_factor": 3},
                      "pbt": {"perturbation_interval": 2}}
OBJECT_STORE_BYTES = 128 * 1024 * 1024


class RayTrial(Trial):
    """:class:`Trial` inside a Ray Tune function trainable: reports go through ``tune.report``."""

    backend = "ray"

    def __init__(self, number, space, params, multi_objective, metric_names):
        super().__init__(number, space, params, multi_objective)
        self._metric_names = metric_names
        checkpoint = tune.get_checkpoint()
        if checkpoint is not None:
            self.checkpoint = checkpoint.to_directory()

    def _report(self, value, step, checkpoint):
        metrics = {"autometa_state": "running", "autometa_step": step, "autometa_user_attrs": dict(self.user_attrs)}
        if not self.multi_objective:
            metrics[self._metric_names[0]] = value
        saved = tune.Checkpoint.from_directory(checkpoint) if checkpoint is not None else None
        tune.report(metrics, checkpoint=saved)


class _Trainable:
    """The function trainable: builds the trial, runs the objective, reports the outcome.

    A class (not a closure) so that Ray pickles it by value with the objective it holds.
    """

    def __init__(self, objective, space: dict, metric_names: list[str], n_objectives: int, first: int):
        self.objective = objective
        self.first = first
        self.space = space
        self.metric_names = metric_names
        self.n_objectives = n_objectives

    def __call__(self, config: dict) -> None:
        space = parse_space(self.space)
        params = space.prune({k: v for k, v in config.items() if k in space})
        number = _trial_number(_tag_in_trial(), self.first)
        trial = RayTrial(number, space, params, self.n_objectives > 1, self.metric_names)
        final = {"autometa_user_attrs": trial.user_attrs}
        try:
            values = run_objective(self.objective, trial, self.n_objectives)
        except TrialPruned as exc:
            last = trial.intermediate[max(trial.intermediate)] if trial.intermediate else float("nan")
            if isinstance(exc, TrialDiverged):
                trial.set_user_attr("diverged_at_step", exc.step)
                final.update(autometa_error=str(exc), autometa_diverged=True)
                last = float("nan")
            tune.report({**final, "autometa_state": "pruned", self.metric_names[0]: last})
            return
        tune.report({**final, "autometa_state": "complete", **dict(zip(self.metric_names, values))})


def _trial_number(experiment_tag: str, first: int) -> int:
    """The trial's number from 0: Tune's experiment tag starts with its creation counter.

    Ray's variant generator counts from 0, searchers (``SearchGenerator``) from 1: ``first``.
    """
    return int(str(experiment_tag).split("_", 1)[0].split("@", 1)[0]) - first


def _tag_in_trial() -> str:
    """The experiment tag of the running trial, read from its folder name ``<trial name>_<tag>_<date>``."""
    context = tune.get_context()
    return Path(context.get_trial_dir()).name[len(context.get_trial_name()) + 1:]


class _DefineByRun:
    """OptunaSearch's define-by-run space: samples the neutral space with conditions."""

    def __init__(self, space: dict):
        self.space = space

    def __call__(self, optuna_trial):
        from autometa.search._optuna import suggest_space

        suggest_space(optuna_trial, parse_space(self.space))


def to_ray_space(space: SearchSpace) -> dict:
    """Ray Tune sampling domains for every parameter (conditions are applied inside the trial)."""
    out = {}
    for p in space:
        if p.kind == "choice":
            out[p.name] = tune.choice(list(p.choices))
        elif p.kind == "int":
            if p.log:
                out[p.name] = tune.lograndint(p.low, p.high + 1)
            else:
                out[p.name] = tune.qrandint(p.low, p.high, p.step) if p.step != 1 else tune.randint(p.low, p.high + 1)
        elif p.log:
            out[p.name] = tune.loguniform(p.low, p.high)
        elif p.step is not None:
            out[p.name] = tune.quniform(p.low, p.high, p.step)
        else:
            out[p.name] = tune.uniform(p.low, p.high)
    return out


def _searcher(settings: Settings, space: SearchSpace, modes):
    if settings.sampler == "random":
        from ray.tune.search.basic_variant import BasicVariantGenerator

        return BasicVariantGenerator(random_state=settings.seed, **settings.sampler_options), to_ray_space(space)
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    options = dict(settings.sampler_options)
    if space.conditional:
        options.setdefault("group", True)
        options.setdefault("multivariate", True)
    sampler = optuna.samplers.TPESampler(seed=settings.seed, **options)
    multi = settings.n_objectives > 1
    # a define-by-run OptunaSearch ignores Tune's metric and mode, so it gets its own
    return OptunaSearch(space=_DefineByRun(space.to_dict()), sampler=sampler,
                        metric=settings.metric_names if multi else settings.metric_names[0],
                        mode=modes if multi else modes[0]), None


def _scheduler(settings: Settings, space: SearchSpace):
    name = settings.scheduler
    if name is None:
        return None
    options = {**SCHEDULER_DEFAULTS[name], **settings.pruner_options}
    if name == "asha":
        from ray.tune.schedulers import ASHAScheduler

        return ASHAScheduler(time_attr="training_iteration", **options)
    if name == "hyperband":
        from ray.tune.schedulers import HyperBandScheduler

        return HyperBandScheduler(time_attr="training_iteration", **options)
    from ray.tune.schedulers import PopulationBasedTraining

    options.setdefault("hyperparam_mutations", to_ray_space(space))
    return PopulationBasedTraining(time_attr="training_iteration", **options)


class _Progress(tune.Callback):
    """Passes each finished trial to ``on_trial_end`` as a neutral record."""

    def __init__(self, settings: Settings, space: SearchSpace, first: int):
        self.settings, self.space, self.first = settings, space, first

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._emit(trial, failed=False)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._emit(trial, failed=True)

    def _emit(self, trial, failed: bool):
        metrics = dict(trial.last_result or {})
        record = _record(self.settings, self.space, trial.trial_id, trial.experiment_tag, self.first,
                         trial.config, metrics, "failed" if failed else None, None, None)
        self.settings.on_trial_end(record)


def _record(settings: Settings, space: SearchSpace, trial_id, tag, first, config, metrics: dict, state, error,
            history) -> TrialRecord:
    state = state or {"complete": "complete", "failed": "failed"}.get(metrics.get("autometa_state"), "pruned")
    # a trial that a scheduler stopped never sent its final result: it was pruned
    values = None
    if state == "complete":
        values = [float(metrics[n]) for n in settings.metric_names]
    elif state == "pruned" and metrics.get(settings.metric_names[0]) is not None:
        value = float(metrics[settings.metric_names[0]])
        values = None if math.isnan(value) else [value]
    if state == "failed":
        error = error or "failed (Ray recorded no error)"
    elif state == "pruned":
        error = error or metrics.get("autometa_error")
    params = space.prune({k: v for k, v in (config or {}).items() if k in space})
    return TrialRecord(_trial_number(tag, first), params, state, values, history or {}, metrics.get("time_total_s"),
                       error, dict(metrics.get("autometa_user_attrs") or {}), str(trial_id))


def _history(result, settings: Settings) -> dict[int, float]:
    frame = result.metrics_dataframe
    if frame is None or "autometa_step" not in frame or settings.metric_names[0] not in frame:
        return {}
    rows = frame[frame["autometa_state"] == "running"]
    steps, values = rows["autometa_step"], rows[settings.metric_names[0]]
    return {int(s): float(v) for s, v in zip(steps, values) if not math.isnan(v)}


def init_ray(settings: Settings) -> bool:
    """Start or join Ray unless it is running; return whether this call started it."""
    if ray.is_initialized():
        return False
    if settings.address is None:
        ray.init(num_cpus=settings.num_cpus, object_store_memory=OBJECT_STORE_BYTES, include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
        return True
    saved = os.environ.get("RAY_AUTH_TOKEN")
    if settings.auth_token:
        os.environ["RAY_AUTH_TOKEN"] = settings.auth_token
    try:
        ray.init(address=settings.address, log_to_driver=False, configure_logging=False)
    except Exception as exc:
        if "auth" in f"{type(exc).__name__} {exc}".lower():
            raise ConfigError(
                f"The Ray cluster at {settings.address} refused this driver's authentication token ({exc}). "
                f"Ray >= 2.59 clusters started with `ray start` need the token the head wrote to "
                f"~/.ray/auth_token: export RAY_AUTH_TOKEN=<its content>, or pass auth_token=... "
                f"(CLI: --auth-token), or start every node with RAY_AUTH_MODE=disabled on a trusted network."
            ) from exc
        raise
    finally:
        if settings.auth_token:
            if saved is None:
                os.environ.pop("RAY_AUTH_TOKEN", None)
            else:
                os.environ["RAY_AUTH_TOKEN"] = saved
    return True


def _storage_path(settings: Settings) -> tuple[str, Path | None]:
    """Ray's ``storage_path`` and, when it is a temporary folder, that folder (to delete)."""
    if settings.storage:
        if "://" in settings.storage:
            return settings.storage, None
        return str(Path(settings.storage).resolve()), None
    if settings.out_dir is not None:
        return str(settings.out_dir / "ray"), None
    temporary = Path(tempfile.mkdtemp(prefix="autometa-ray-"))
    return str(temporary), temporary


def run(objective, space: SearchSpace, settings: Settings) -> BackendRun:
    """Run the search with Ray Tune; see :func:`autometa.search` for the arguments."""
    modes = ["min" if d == "minimize" else "max" for d in settings.directions]
    multi = settings.n_objectives > 1
    first = 0 if settings.sampler == "random" else 1
    trainable = _Trainable(objective, space.to_dict(), settings.metric_names, settings.n_objectives, first)
    trainable = tune.with_resources(trainable, settings.resources or {"cpu": 1})
    storage_path, temporary = _storage_path(settings)
    experiment = f"{storage_path.rstrip('/')}/{settings.study_name}"
    started = init_ray(settings)
    start = time.perf_counter()
    try:
        callbacks = [_Progress(settings, space, first)] if settings.on_trial_end is not None else []
        run_config = tune.RunConfig(
            name=settings.study_name, storage_path=storage_path, verbose=0, callbacks=callbacks,
            failure_config=tune.FailureConfig(max_failures=settings.max_retries))
        restored = tune.Tuner.can_restore(experiment)
        if restored and not settings.resume:
            raise ConfigError(f"{experiment} already holds a Ray Tune experiment. Pass resume=True (CLI: --resume) "
                              f"to continue it, or another out_dir / study_name.")
        if restored:
            tuner = tune.Tuner.restore(experiment, trainable=trainable, resume_unfinished=True,
                                       resume_errored=settings.max_retries > 0)
        else:
            searcher, param_space = _searcher(settings, space, modes)
            tune_config = tune.TuneConfig(
                num_samples=settings.n_trials, search_alg=searcher, scheduler=_scheduler(settings, space),
                max_concurrent_trials=settings.max_concurrent, reuse_actors=settings.reuse_workers,
                metric=None if multi else settings.metric_names[0], mode=None if multi else modes[0])
            tuner = tune.Tuner(trainable, param_space=param_space, tune_config=tune_config, run_config=run_config)
        # Tune saves its experiment state at most every 10 s by default, so a driver killed in that
        # window re-runs trials that had finished. Saving after every controller step (the
        # period 0) records each finished trial before the next one is started.
        saved_period = os.environ.get("TUNE_GLOBAL_CHECKPOINT_S")
        os.environ["TUNE_GLOBAL_CHECKPOINT_S"] = saved_period if saved_period is not None else "0"
        try:
            grid = tuner.fit()
        finally:
            if saved_period is None:
                os.environ.pop("TUNE_GLOBAL_CHECKPOINT_S", None)
        records = []
        # Result objects do not carry the trial's experiment tag (its creation counter); the
        # ResultGrid lists the same trials in the same order, so read the tag there
        trials = grid._experiment_analysis.trials
        for result, tune_trial in zip(grid, trials):
            error = None
            if result.error is not None:  # a RayTaskError wraps the objective's exception as its cause
                error = error_text(getattr(result.error, "cause", None) or result.error)
            trial_id, tag = tune_trial.trial_id, tune_trial.experiment_tag
            records.append(_record(settings, space, trial_id, tag, first, result.config, dict(result.metrics or {}),
                                   "failed" if result.error is not None else None, error,
                                   _history(result, settings)))
    finally:
        if started:
            ray.shutdown()
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)
    info = {"sampler": settings.sampler, "scheduler": settings.scheduler, "seed": settings.seed,
            "storage": None if temporary else experiment, "address": settings.address,
            "resources": settings.resources or {"cpu": 1}, "restored": restored,
            "wall_time_s": round(time.perf_counter() - start, 3)}
    return BackendRun(records, info)
