"""The Optuna backend: embedded, the default. Optuna is imported here, lazily.

Storage: an SQLite file ``study.db`` in the results directory by default, or any URL Optuna
accepts (``sqlite:///...``, ``postgresql://...``, ``mysql://...``); without a results directory
the study lives in memory. Samplers: ``tpe`` (multivariate; grouped for conditional spaces),
``cmaes``, ``gp``, ``random``, ``grid`` (discrete spaces only), ``nsga2`` (multi-objective).
Pruners: ``median``, ``successive_halving``, ``hyperband`` (single objective only; Optuna does
not prune multi-objective trials).

Resuming: running the same search again with ``resume=True`` loads the study from its storage.
Finished trials (complete, pruned, failed) are kept and count toward ``n_trials``; a trial left
RUNNING by a killed process is marked failed in the study (``user_attrs.autometa_interrupted``)
and enqueued again with the same parameters and the same autometa number, so it is re-run once
and not counted twice. Trial numbers are autometa's (``user_attrs.autometa_number``, 0, 1, ...
without gaps), not Optuna's, which gives every attempt a new number: the search's records hold
exactly one trial per number; every interrupted attempt is listed in ``info["interrupted"]``
(with its Optuna number) and the numbers this call re-ran in ``info["rerun"]``. This assumes no
other process is working on the study at the same time (for several workers on one study, use
a server database and Optuna's heartbeat instead). The sampler's seed is offset by the number of
trials already in the study, so a resumed random search does not replay the first proposals.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from autometa.errors import BackendUnavailableError, ConfigError, UnsupportedFeatureError
from autometa.search._common import BackendRun, Settings, TrialDiverged, TrialPruned, TrialRecord, error_text
from autometa.search._space import Param, SearchSpace
from autometa.search._trial import Trial, run_objective

SAMPLERS = ("tpe", "cmaes", "gp", "random", "grid", "nsga2")
PRUNERS = ("median", "successive_halving", "hyperband")
_STATES = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed"}


def to_distribution(param: Param) -> optuna.distributions.BaseDistribution:
    """The Optuna distribution of a neutral parameter."""
    if param.kind == "choice":
        return optuna.distributions.CategoricalDistribution(list(param.choices))
    if param.kind == "int":
        return optuna.distributions.IntDistribution(param.low, param.high, log=param.log, step=param.step)
    return optuna.distributions.FloatDistribution(param.low, param.high, log=param.log, step=param.step)


def suggest_param(optuna_trial, param: Param):
    """One value of ``param`` from an Optuna trial."""
    if param.kind == "choice":
        return optuna_trial.suggest_categorical(param.name, list(param.choices))
    if param.kind == "int":
        return optuna_trial.suggest_int(param.name, param.low, param.high, step=param.step, log=param.log)
    return optuna_trial.suggest_float(param.name, param.low, param.high, step=param.step, log=param.log)


def suggest_space(optuna_trial, space: SearchSpace) -> dict:
    """Sample the active parameters of ``space`` with an Optuna trial (define-by-run, conditions in order)."""
    values: dict = {}
    for param in space:
        if space.is_active(param.name, values):
            values[param.name] = suggest_param(optuna_trial, param)
    return values


class OptunaTrial(Trial):
    """:class:`Trial` backed by an ``optuna.Trial``: define-by-run and Optuna's pruners."""

    backend = "optuna"

    def __init__(self, optuna_trial, space: SearchSpace, params: dict, multi_objective: bool,
                 number: int | None = None):
        super().__init__(optuna_trial.number if number is None else number, space, params, multi_objective)
        self._trial = optuna_trial

    def _suggest_new(self, param: Param):
        return suggest_param(self._trial, param)

    def _report(self, value, step, checkpoint):
        if not self.multi_objective:  # Optuna keeps intermediate values of single-objective trials only
            self._trial.report(value, step)
        if checkpoint is not None:
            self._trial.set_user_attr("autometa_checkpoint", str(checkpoint))

    def _should_prune(self) -> bool:
        return (not self.multi_objective) and self._trial.should_prune()


def make_sampler(settings: Settings, space: SearchSpace, seed: int | None):
    """The Optuna sampler named by ``settings.sampler``."""
    name, options = settings.sampler, dict(settings.sampler_options)
    if name == "tpe":
        if space.conditional:
            options.setdefault("group", True)
            options.setdefault("multivariate", True)
        return optuna.samplers.TPESampler(seed=seed, **options)
    if name == "cmaes":
        try:
            import cmaes  # noqa: F401 - Optuna's CMA-ES sampler needs it and fails late without it
        except ImportError as exc:
            raise BackendUnavailableError("sampler='cmaes' needs the cmaes package: pip install cmaes") from exc
        return optuna.samplers.CmaEsSampler(seed=seed, **options)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, **options)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed, **options)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, **options)
    if name == "grid":
        if space.conditional:
            raise UnsupportedFeatureError(
                "Grid search cannot walk a conditional space (parameters with `when`). Remove the "
                "conditions, or use sampler='random' / 'tpe'.")
        return optuna.samplers.GridSampler({p.name: p.grid() for p in space}, seed=seed, **options)
    raise ConfigError(f"Unknown sampler {name!r} for the optuna backend. Choose one of {SAMPLERS}.")


def make_pruner(settings: Settings):
    name, options = settings.pruner, settings.pruner_options
    if name is None:
        return optuna.pruners.NopPruner()
    if settings.n_objectives > 1:
        raise UnsupportedFeatureError(
            f"Optuna cannot prune multi-objective trials, so pruner={name!r} would do nothing. Drop the "
            f"pruner, or search one objective.")
    if name == "median":
        return optuna.pruners.MedianPruner(**options)
    if name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(**options)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(**options)
    raise ConfigError(f"Unknown pruner {name!r} for the optuna backend. Choose one of {PRUNERS} or None.")


def storage_url(settings: Settings) -> str | None:
    """The storage URL: the one given, else ``sqlite:///<out_dir>/study.db``, else in memory."""
    if settings.storage:
        if "://" not in settings.storage:
            path = Path(settings.storage)
            return f"sqlite:///{path.resolve()}"
        return settings.storage
    if settings.out_dir is not None:
        settings.out_dir.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{(settings.out_dir / 'study.db').resolve()}"
    return None


INTERRUPTED = "interrupted: the sweep process stopped during this trial; it was re-run with the same parameters"
NUMBER = "autometa_number"  # user attribute: the trial's number in autometa's records (Optuna's counts attempts)


def autometa_number(frozen) -> int:
    """The number of an Optuna trial in autometa's records (Optuna's own for studies of older versions)."""
    return int(frozen.user_attrs.get(NUMBER, frozen.number))


def to_record(frozen) -> TrialRecord | None:
    """A neutral record of a finished Optuna trial (None while it is still running or waiting).

    Its number is autometa's; a re-run of an interrupted trial keeps that trial's number, and its
    Optuna number is kept in ``user_attrs["optuna_number"]``.
    """
    state = _STATES.get(frozen.state)
    if state is None:
        return None
    attrs = dict(frozen.user_attrs)
    number = int(attrs.pop(NUMBER, frozen.number))
    if number != frozen.number:
        attrs["optuna_number"] = frozen.number
    error = attrs.pop("autometa_error", None)
    if attrs.pop("autometa_interrupted", False):
        error = INTERRUPTED
    values = frozen.values
    intermediate = {int(k): float(v) for k, v in frozen.intermediate_values.items()}
    if state == "pruned" and "diverged_at_step" in attrs:
        values = None  # Optuna keeps the last report as a pruned trial's value; a diverged run has none
    elif state == "pruned" and values is None and intermediate:
        values = [intermediate[max(intermediate)]]
    if state == "failed" and error is None:
        error = frozen.system_attrs.get("fail_reason", "failed (Optuna recorded no reason)")
    duration = frozen.duration.total_seconds() if frozen.duration is not None else None
    return TrialRecord(number, dict(frozen.params), state, None if values is None else list(values),
                       intermediate, duration, error, attrs, str(frozen._trial_id))


def _recover_interrupted(study) -> list[int | None]:
    """Mark trials left RUNNING as failed and enqueue their parameters again under their numbers; return those.

    A trial killed before it was given an autometa number is re-run under a new one (None).
    """
    storage = study._storage
    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for frozen in stale:
        storage.set_trial_user_attr(frozen._trial_id, "autometa_interrupted", True)
        storage.set_trial_state_values(frozen._trial_id, TrialState.FAIL)
        keep = {NUMBER: frozen.user_attrs[NUMBER]} if NUMBER in frozen.user_attrs else {}
        study.enqueue_trial(frozen.params, user_attrs=keep)
    return [frozen.user_attrs.get(NUMBER) for frozen in stale]


def _records(study) -> tuple[list[TrialRecord], list[dict]]:
    """(one record per autometa number, every interrupted attempt in the study).

    An interrupted attempt is not a trial of the search: its number's re-run is. A number whose
    re-run has not finished (a timeout, or killed while waiting) is recorded as failed, so no
    number is missing.
    """
    frozen = study.get_trials(deepcopy=False)
    interrupted = [t for t in frozen if t.user_attrs.get("autometa_interrupted")]
    records = {}
    for t in frozen:
        record = None if t.user_attrs.get("autometa_interrupted") else to_record(t)
        if record is not None:
            records[record.number] = record
    # an attempt killed before it was numbered (or from an older autometa) is re-run under a new number
    attempts = [{"number": t.user_attrs.get(NUMBER), "optuna_number": t.number, "params": dict(t.params)}
                for t in interrupted]
    for attempt in attempts:
        if attempt["number"] is not None and attempt["number"] not in records:
            records[attempt["number"]] = TrialRecord(attempt["number"], attempt["params"], "failed", error=(
                INTERRUPTED.replace("; it was re-run", "; resume to re-run")))
    return list(records.values()), attempts


def fanova_importances(trials: list[TrialRecord], params: list[Param], direction: str, objective: int = 0,
                       seed: int = 0) -> dict[str, float]:
    """fANOVA importances of ``params`` over complete ``trials`` (see ``SearchResult.importances``)."""
    distributions = {p.name: to_distribution(p) for p in params}
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "study created" line for a scratch study
    try:
        study = optuna.create_study(direction=direction)
    finally:
        optuna.logging.set_verbosity(verbosity)
    for t in trials:
        study.add_trial(optuna.trial.create_trial(
            params={n: t.params[n] for n in distributions}, distributions=distributions, value=t.values[objective]))
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=seed)
    scores = optuna.importance.get_param_importances(study, evaluator=evaluator, params=list(distributions))
    return {name: float(score) for name, score in scores.items()}


def run(objective, space: SearchSpace, settings: Settings) -> BackendRun:
    """Run the search with Optuna; see :func:`autometa.search` for the arguments."""
    url = storage_url(settings)
    existing = None
    if url is not None:
        try:
            existing = optuna.load_study(study_name=settings.study_name, storage=url)
        except KeyError:
            existing = None
    if existing is not None:
        if not settings.resume:
            raise ConfigError(
                f"Storage {url} already holds study {settings.study_name!r} with {len(existing.trials)} trial(s). "
                f"Pass resume=True (CLI: --resume) to continue it, or another out_dir / study_name.")
        if list(existing.directions) != [optuna.study.StudyDirection[d.upper()] for d in settings.directions]:
            raise ConfigError(
                f"Study {settings.study_name!r} in {url} has directions "
                f"{[d.name.lower() for d in existing.directions]}, not {settings.directions}. Resume with the "
                f"same directions, or start a new study.")
    before = 0 if existing is None else len(existing.trials)
    seed = None if settings.seed is None else settings.seed + before
    study = optuna.create_study(storage=url, study_name=settings.study_name, directions=settings.directions,
                                sampler=make_sampler(settings, space, seed), pruner=make_pruner(settings),
                                load_if_exists=True)
    recovered = _recover_interrupted(study)
    finished = [t for t in study.get_trials(deepcopy=False, states=tuple(_STATES))
                if not t.user_attrs.get("autometa_interrupted")]
    remaining = max(0, settings.n_trials - len(finished))
    multi = settings.n_objectives > 1
    numbers = {"next": max((autometa_number(t) for t in study.get_trials(deepcopy=False)), default=-1) + 1}
    lock = threading.Lock()  # trials run in threads with max_concurrent > 1

    def number_of(optuna_trial) -> int:
        """The autometa number: kept by a re-run of an interrupted trial, else the next free one."""
        if NUMBER in optuna_trial.user_attrs:
            return int(optuna_trial.user_attrs[NUMBER])
        with lock:
            number, numbers["next"] = numbers["next"], numbers["next"] + 1
        optuna_trial.set_user_attr(NUMBER, number)
        return number

    def wrapped(optuna_trial):
        number = number_of(optuna_trial)
        trial = OptunaTrial(optuna_trial, space, suggest_space(optuna_trial, space), multi, number)
        try:
            values = run_objective(objective, trial, settings.n_objectives)
        except TrialPruned as exc:
            if isinstance(exc, TrialDiverged):  # pruned, so that Optuna logs no traceback for it
                optuna_trial.set_user_attr("autometa_error", str(exc))
                optuna_trial.set_user_attr("diverged_at_step", exc.step)
            raise optuna.TrialPruned(str(exc)) from exc
        except Exception as exc:
            optuna_trial.set_user_attr("autometa_error", error_text(exc))
            raise
        finally:
            for key, item in trial.user_attrs.items():
                optuna_trial.set_user_attr(key, item)
        return values if multi else values[0]

    callbacks = []
    if settings.on_trial_end is not None:
        def report_end(_study, frozen):
            record = to_record(frozen)
            if record is not None:
                settings.on_trial_end(record)
        callbacks.append(report_end)
    start = time.perf_counter()
    if remaining:
        study.optimize(wrapped, n_trials=remaining, timeout=settings.timeout, catch=(Exception,),
                       callbacks=callbacks, n_jobs=settings.max_concurrent or 1)
    records, attempts = _records(study)
    info = {"sampler": settings.sampler, "pruner": settings.pruner, "seed": settings.seed, "storage": url,
            "study_name": settings.study_name, "resumed_from": before, "interrupted_rerun": len(recovered),
            "rerun": sorted(n for n in recovered if n is not None), "interrupted": attempts,
            "wall_time_s": round(time.perf_counter() - start, 3)}
    return BackendRun(records, info)


def quiet_logging() -> None:
    """Silence Optuna's INFO line per trial (callers that show a progress bar instead)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
