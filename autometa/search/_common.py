"""What every backend receives: the settings of one search, and helpers they share."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from autometa.search._result import TrialRecord


class TrialPruned(Exception):
    """Raise inside an objective to stop a trial that :meth:`Trial.should_prune` condemned.

    Example::

        for step in range(steps):
            trial.report(loss, step)
            if trial.should_prune():
                raise TrialPruned()
    """


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
    auth_token: str | None = None
    num_cpus: int | None = None
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
