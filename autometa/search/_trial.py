"""The one trial object an objective sees, whichever backend runs it."""

from __future__ import annotations

import math

from autometa.errors import ConfigError, NumericalError, UnsupportedFeatureError
from autometa.search._common import TrialDiverged, diverged
from autometa.search._space import Param, SearchSpace


class Trial:
    """One evaluation of the objective: its parameters, intermediate reports and pruning.

    The parameters of the search space are sampled before the objective starts and are in
    :attr:`params` (inactive conditional parameters are absent). Backends subclass this and
    override the three hooks ``_suggest_new``, ``_report`` and ``_should_prune``; the
    objective only uses the public methods, so the same objective runs on every backend.

    Contract of the public methods:

    - :meth:`suggest` returns the value of a space parameter (raises if it is inactive).
    - ``suggest_float`` / ``suggest_int`` / ``suggest_categorical`` return the sampled value
      if the name is in the space; a name outside the space is define-by-run, which only the
      Optuna backend offers (others raise :class:`UnsupportedFeatureError`).
    - :meth:`report` records an intermediate value at an integer ``step`` (increasing); with
      ``checkpoint`` (a directory) the backend keeps it (Ray: ``tune.report`` with a
      ``tune.Checkpoint``; others record the path).
    - :meth:`should_prune` says whether to stop now (Optuna pruners, NNI's median-stop
      assessor). On Ray the scheduler stops a trial itself after a report, so it is False there.

    Args:
        number: the trial's number in the study, from 0.
        space: the search space.
        params: the pre-sampled values of the active space parameters.
        multi_objective: whether the objective returns several values.
    """

    backend = "neutral"

    def __init__(self, number: int, space: SearchSpace, params: dict, multi_objective: bool = False):
        self.number = number
        self.space = space
        self.params = dict(params)
        self.multi_objective = multi_objective
        self.intermediate: dict[int, float] = {}
        self.checkpoint: str | None = None
        self.user_attrs: dict = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(number={self.number}, params={self.params})"

    # ---- parameters -------------------------------------------------------------------
    def suggest(self, name: str):
        """The value of space parameter ``name`` for this trial."""
        if name not in self.space:
            raise ConfigError(f"{name!r} is not a parameter of the search space (it has {self.space.names}).")
        if name not in self.params:
            raise ConfigError(f"{name!r} is inactive in this trial: its condition {self.space[name].when} "
                              f"does not hold for {self.params}. Check trial.params before asking for it.")
        return self.params[name]

    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False,
                      step: float | None = None) -> float:
        """A float in [low, high] (the space's value when ``name`` is in the space)."""
        return self._suggest(Param(name, "float", float(low), float(high), log, step))

    def suggest_int(self, name: str, low: int, high: int, *, log: bool = False, step: int = 1) -> int:
        """An integer in [low, high] (the space's value when ``name`` is in the space)."""
        return self._suggest(Param(name, "int", int(low), int(high), log, int(step)))

    def suggest_categorical(self, name: str, choices):
        """One of ``choices`` (the space's value when ``name`` is in the space)."""
        return self._suggest(Param(name, "choice", choices=tuple(choices)))

    def _suggest(self, param: Param):
        if param.name in self.params:
            return self.params[param.name]
        if param.name in self.space:
            return self.suggest(param.name)  # raises: inactive
        value = self._suggest_new(param)
        self.params[param.name] = value
        return value

    def _suggest_new(self, param: Param):
        raise UnsupportedFeatureError(
            f"Parameter {param.name!r} is not in the search space, and the {self.backend!r} backend samples "
            f"every parameter before the trial starts (no define-by-run). Add {param.name!r} to the space "
            f"(e.g. {{{param.name}: {param.to_dict()}}}), or use backend='optuna'."
        )

    # ---- intermediate values and pruning ----------------------------------------------
    def report(self, value: float, step: int, checkpoint: str | None = None) -> None:
        """Record the intermediate ``value`` at ``step`` (and optionally a checkpoint directory)."""
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ConfigError(f"trial.report needs an integer step >= 0. Got {step!r}.")
        value = float(value)
        self.intermediate[step] = value
        if checkpoint is not None:
            self.checkpoint = str(checkpoint)
        self._report(value, step, checkpoint)

    def should_prune(self) -> bool:
        """Whether the backend's pruner says to stop this trial now."""
        return bool(self._should_prune())

    def last_checkpoint(self) -> str | None:
        """The directory of the latest checkpoint of this trial (after a retry or a PBT exploit on Ray)."""
        return self.checkpoint

    def set_user_attr(self, key: str, value) -> None:
        """Attach a JSON-serializable value to the trial's record (e.g. a training cost)."""
        self.user_attrs[key] = value

    def _report(self, value: float, step: int, checkpoint: str | None) -> None:
        pass

    def _should_prune(self) -> bool:
        return False


def check_objective_value(value, n_objectives: int) -> list[float]:
    """The objective's return value as a list of ``n_objectives`` finite floats."""
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if len(values) != n_objectives:
        raise ConfigError(f"The objective returned {len(values)} value(s) but the search has {n_objectives} "
                          f"direction(s). Return one value per direction.")
    try:
        out = [float(v) for v in values]
    except (TypeError, ValueError):
        raise ConfigError(f"The objective must return numbers. Got {value!r}.") from None
    if not all(math.isfinite(v) for v in out):
        raise NumericalError(f"the objective returned the non-finite value(s) {out}")
    return out


def run_objective(objective, trial: Trial, n_objectives: int) -> list[float]:
    """``objective(trial)`` as ``n_objectives`` finite floats; every backend calls objectives through this.

    Raises:
        TrialDiverged: the objective raised :class:`NumericalError` (a run that diverged, with
            its ``step`` when it has one) or returned NaN / inf; backends record the trial as
            pruned with a one-line message and go on.
        TrialPruned, ConfigError, ...: whatever the objective raised, unchanged.
    """
    try:
        return check_objective_value(objective(trial), n_objectives)
    except TrialDiverged:
        raise
    except NumericalError as exc:
        raise diverged(trial.params, getattr(exc, "step", None), str(exc)) from exc
