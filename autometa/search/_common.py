"""What every backend receives and returns: the settings of one search, trial records, shared helpers.

The backends (``_optuna``, ``_ray``, ``_nni``) depend on this module, ``_space`` and ``_trial``
only; they return a :class:`BackendRun` that ``_api`` turns into a ``SearchResult``, so that
``_result`` may use a backend (Optuna's fANOVA) without an import cycle.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

STATES = ("complete", "pruned", "failed")


@dataclass
class TrialRecord:
    """What happened in one trial.

    Attributes:
        number: the trial's number, from 0, unique within a search.
        params: the values of the active parameters.
        state: ``"complete"``, ``"pruned"`` or ``"failed"``.
        values: the objective value(s) (None for a failed trial; the last reported value for a
            pruned one when there is one).
        intermediate: ``{step: value}`` reported with ``trial.report``.
        duration_s: wall time of the trial.
        error: the exception (type and message) of a failed trial.
        user_attrs: values attached with ``trial.set_user_attr``.
        backend_id: the backend's own id for the trial (Optuna trial id, Ray trial id, ...).
    """

    number: int
    params: dict
    state: str
    values: list[float] | None = None
    intermediate: dict[int, float] = field(default_factory=dict)
    duration_s: float | None = None
    error: str | None = None
    user_attrs: dict = field(default_factory=dict)
    backend_id: str | None = None

    @property
    def value(self) -> float | None:
        """The objective value of a single-objective trial."""
        return None if self.values is None else self.values[0]

    def to_dict(self) -> dict:
        out = asdict(self)
        out["intermediate"] = {str(k): v for k, v in self.intermediate.items()}
        return out

    @classmethod
    def from_dict(cls, raw: dict) -> TrialRecord:
        raw = dict(raw)
        raw["intermediate"] = {int(k): float(v) for k, v in raw.get("intermediate", {}).items()}
        return cls(**raw)


class TrialPruned(Exception):
    """Raise inside an objective to stop a trial that :meth:`Trial.should_prune` condemned.

    Example::

        for step in range(steps):
            trial.report(loss, step)
            if trial.should_prune():
                raise TrialPruned()
    """


class TrialDiverged(TrialPruned):
    """A trial whose training produced a non-finite number: stopped and recorded as pruned.

    Raised for the objective by the backends when it raises :class:`autometa.errors.NumericalError`
    or returns NaN or inf. The record's ``error`` holds the one-line message (parameters, step,
    remedy) and ``user_attrs["diverged_at_step"]`` the step (None when unknown); its ``values``
    are None, so that no sampler mistakes a diverged run for a good one.
    """

    def __init__(self, message: str, step: int | None = None):
        super().__init__(message)
        self.step = step


DIVERGED_REMEDY = ("narrow the search space where it diverges (lower the upper bound of the learning rates first) "
                   "or clip gradients (config: outer.clip_grad)")


def diverged(params: dict, step: int | None, detail: str) -> TrialDiverged:
    """The :class:`TrialDiverged` of a trial with ``params`` that went non-finite at ``step``."""
    where = f"at step {step}" if step is not None else "(step unknown)"
    shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v!r}" for k, v in params.items())
    return TrialDiverged(f"diverged {where} with {shown or 'no parameters'}: {detail.rstrip('.')}; {DIVERGED_REMEDY}.",
                         step)


@dataclass
class Settings:
    """The validated arguments of :func:`autometa.search`, as one backend sees them."""

    n_trials: int
    directions: list[str]
    metric_names: list[str]
    seed: int | None
    sampler: str
    pruner: str | None = None
    scheduler: str | None = None
    storage: str | None = None
    study_name: str = "autometa"
    out_dir: Path | None = None
    resume: bool = False
    timeout: float | None = None
    address: str | None = None
    connect_timeout: float = 30.0
    auth_token: str | None = None
    num_cpus: int | None = None
    num_gpus: int | None = None
    resources: dict | None = None
    max_concurrent: int | None = None
    max_retries: int = 0
    reuse_workers: bool = True
    sampler_options: dict = field(default_factory=dict)
    pruner_options: dict = field(default_factory=dict)
    on_trial_end: Callable[[TrialRecord], None] | None = None

    @property
    def n_objectives(self) -> int:
        return len(self.directions)

    def sign(self, objective: int = 0) -> float:
        """+1 to minimize, -1 to maximize: ``sign * value`` is always minimized."""
        return 1.0 if self.directions[objective] == "minimize" else -1.0


def error_text(exc: BaseException) -> str:
    """``Type: message`` of an exception, as trial records keep it."""
    return f"{type(exc).__name__}: {exc}"


@dataclass
class BackendRun:
    """What a backend's ``run`` returns: the trial records (any order) and how the search ran."""

    records: list[TrialRecord]
    info: dict
