"""One results format for every backend: trial records, best trial(s), tables and plots."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from autometa.errors import ConfigError
from autometa.search._common import STATES, TrialRecord
from autometa.search._space import SearchSpace

__all__ = ["STATES", "SearchResult", "TrialRecord"]

def _dominates(a: list[float], b: list[float], signs: list[float]) -> bool:
    better_or_equal = all(s * x <= s * y for x, y, s in zip(a, b, signs))
    return better_or_equal and any(s * x < s * y for x, y, s in zip(a, b, signs))


@dataclass
class SearchResult:
    """The outcome of :func:`autometa.search`, the same for every backend.

    Attributes:
        backend: ``"optuna"``, ``"ray"`` or ``"nni"``.
        directions: ``"minimize"`` / ``"maximize"`` per objective.
        space: the search space.
        trials: every trial, ordered by number.
        metric_names: a name per objective (``["objective"]`` for a Python objective).
        info: how the search ran (sampler, pruner/scheduler, seed, storage, wall time, ...).
    """

    backend: str
    directions: list[str]
    space: SearchSpace
    trials: list[TrialRecord]
    metric_names: list[str] = field(default_factory=lambda: ["objective"])
    info: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        counts = {s: sum(t.state == s for t in self.trials) for s in STATES}
        best = self.best_params if self.completed and len(self.directions) == 1 else None
        return f"SearchResult(backend={self.backend!r}, trials={counts}, best_params={best})"

    @property
    def completed(self) -> list[TrialRecord]:
        return [t for t in self.trials if t.state == "complete"]

    @property
    def multi_objective(self) -> bool:
        return len(self.directions) > 1

    @property
    def best_trial(self) -> TrialRecord:
        """The best complete trial (single objective; ties go to the lower trial number)."""
        if self.multi_objective:
            raise ConfigError("A multi-objective search has no single best trial; use best_trials (the Pareto front).")
        if not self.completed:
            raise ConfigError(f"No trial of this search completed ({len(self.trials)} trial(s): "
                              f"{[t.state for t in self.trials]}); look at the trials' errors.")
        sign = 1.0 if self.directions[0] == "minimize" else -1.0
        return min(self.completed, key=lambda t: (sign * t.value, t.number))

    @property
    def best_params(self) -> dict:
        return dict(self.best_trial.params)

    @property
    def best_value(self) -> float:
        return self.best_trial.value

    @property
    def best_trials(self) -> list[TrialRecord]:
        """The complete trials no other complete trial dominates (the Pareto front)."""
        signs = [1.0 if d == "minimize" else -1.0 for d in self.directions]
        done = self.completed
        return [t for t in done if not any(_dominates(o.values, t.values, signs) for o in done if o is not t)]

    # ---- tables and files -------------------------------------------------------------
    def to_dataframe(self):
        """One row per trial: number, state, value(s), ``params.<name>``, duration, error (pandas)."""
        import pandas as pd

        rows = []
        for t in self.trials:
            row = {"number": t.number, "state": t.state}
            for i, name in enumerate(self.metric_names):
                row[name] = None if t.values is None else t.values[i]
            row.update({f"params.{k}": v for k, v in t.params.items()})
            row.update({"duration_s": t.duration_s, "steps_reported": len(t.intermediate), "error": t.error})
            row.update({f"user_attrs.{k}": v for k, v in t.user_attrs.items()})
            rows.append(row)
        return pd.DataFrame(rows)

    def to_csv(self, path: str | os.PathLike) -> Path:
        """Write the trials table as CSV (the standard library's csv; pandas is not needed)."""
        import csv

        path = Path(path)
        columns = ["number", "state", *self.metric_names]
        columns += [f"params.{n}" for n in self.space.names]
        extra = sorted({k for t in self.trials for k in t.params} - set(self.space.names))
        columns += [f"params.{n}" for n in extra] + ["duration_s", "steps_reported", "error"]
        with open(path, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(columns)
            for t in self.trials:
                values = t.values or [None] * len(self.metric_names)
                writer.writerow([t.number, t.state, *values,
                                 *[t.params.get(n, "") for n in self.space.names + extra],
                                 t.duration_s, len(t.intermediate), t.error or ""])
        return path

    def to_dict(self) -> dict:
        out = {
            "backend": self.backend, "directions": self.directions, "metric_names": self.metric_names,
            "space": self.space.to_dict(), "info": self.info,
            "counts": {s: sum(t.state == s for t in self.trials) for s in STATES},
            "trials": [t.to_dict() for t in self.trials],
        }
        if self.completed:
            if self.multi_objective:
                out["pareto_front"] = [t.number for t in self.best_trials]
            else:
                out["best"] = {"number": self.best_trial.number, "value": self.best_value, "params": self.best_params}
        return out

    def save(self, path: str | os.PathLike) -> Path:
        """Write the result as JSON (``sweep.json``), readable with :meth:`load`."""
        path = Path(path)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, default=str))
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> SearchResult:
        from autometa.search._space import parse_space

        raw = json.loads(Path(path).read_text())
        return cls(raw["backend"], raw["directions"], parse_space(raw["space"]),
                   [TrialRecord.from_dict(t) for t in raw["trials"]], raw["metric_names"], raw["info"])

    # ---- analysis and plots -----------------------------------------------------------
    def importances(self, objective: int = 0, seed: int = 0) -> dict[str, float]:
        """Parameter importances by fANOVA (Optuna's evaluator), for any backend's trials.

        The complete trials are loaded into an in-memory Optuna study and Optuna's
        ``FanovaImportanceEvaluator`` (a random forest's functional ANOVA decomposition) rates
        each parameter that every complete trial has (conditional parameters are left out).
        Needs at least two complete trials.

        References: Hutter, Hoos & Leyton-Brown 2014, "An Efficient Approach for Assessing
        Hyperparameter Importance".
        """
        # Optuna is imported by its backend module only; the dependency points from the results
        # to the backend (the backends return records, never a SearchResult), so there is no cycle
        from autometa.search._optuna import fanova_importances

        done = self.completed
        if len(done) < 2:
            raise ConfigError(f"Parameter importances need at least 2 complete trials; this search has {len(done)}.")
        common = [n for n in self.space.names if all(n in t.params for t in done)]
        if not common:
            raise ConfigError("No parameter is present in every complete trial, so none can be rated.")
        if len({t.values[objective] for t in done}) == 1:
            raise ConfigError("Every complete trial has the same value, so no parameter can be rated important.")
        return fanova_importances(done, [self.space[n] for n in common], self.directions[objective], objective, seed)

    def plot_history(self, path: str | os.PathLike, objective: int = 0) -> Path:
        """Objective value of each trial and the best so far, by trial number (PNG)."""
        plt = _pyplot()
        sign = 1.0 if self.directions[objective] == "minimize" else -1.0
        fig, ax = plt.subplots(figsize=(6, 4))
        for state, marker in (("complete", "o"), ("pruned", "x")):
            points = [(t.number, t.values[objective]) for t in self.trials if t.state == state and t.values]
            if points:
                ax.scatter(*zip(*points), marker=marker, label=state, alpha=0.8)
        best, xs, ys = math.inf, [], []
        for t in sorted(self.completed, key=lambda t: t.number):
            best = min(best, sign * t.values[objective])
            xs.append(t.number)
            ys.append(sign * best)
        if xs:
            ax.step(xs, ys, where="post", color="black", label="best so far")
        ax.set_xlabel("trial")
        ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))  # trials are whole numbers
        ax.set_ylabel(f"{self.metric_names[objective]} ({self.directions[objective]})")
        ax.set_title(f"Optimization history ({self.backend})")
        ax.legend()
        return _save(fig, path)

    def plot_importances(self, path: str | os.PathLike, objective: int = 0) -> Path:
        """Bar chart of :meth:`importances` (PNG)."""
        plt = _pyplot()
        scores = self.importances(objective)
        fig, ax = plt.subplots(figsize=(6, 0.5 + 0.5 * len(scores)))
        names = list(scores)[::-1]
        ax.barh(names, [scores[n] for n in names])
        ax.set_xlabel("importance (fANOVA)")
        ax.set_title(f"Parameter importances for {self.metric_names[objective]}")
        return _save(fig, path)

    def plot_pareto(self, path: str | os.PathLike, objectives: tuple[int, int] = (0, 1)) -> Path:
        """The complete trials of a multi-objective search, the Pareto front highlighted (PNG)."""
        if not self.multi_objective:
            raise ConfigError("A Pareto front needs a multi-objective search (directions with 2+ entries).")
        plt = _pyplot()
        i, j = objectives
        front = {t.number for t in self.best_trials}
        fig, ax = plt.subplots(figsize=(6, 4))
        others = [(t.values[i], t.values[j]) for t in self.completed if t.number not in front]
        if others:
            ax.scatter(*zip(*others), alpha=0.5, label="trial")
        points = sorted((t.values[i], t.values[j]) for t in self.completed if t.number in front)
        ax.plot(*zip(*points), "o-", color="tab:red", label="Pareto front")
        ax.set_xlabel(f"{self.metric_names[i]} ({self.directions[i]})")
        ax.set_ylabel(f"{self.metric_names[j]} ({self.directions[j]})")
        ax.set_title(f"Pareto front ({self.backend})")
        ax.legend()
        return _save(fig, path)

    def write(self, out_dir: str | os.PathLike) -> dict[str, Path]:
        """Write ``sweep.json``, ``trials.csv`` and every plot that applies into ``out_dir``.

        The importance plot is left out when the trials cannot rate parameters (fewer than two
        complete trials, all with the same value, or no parameter common to all of them).
        """
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        files = {"sweep": self.save(out / "sweep.json"), "trials": self.to_csv(out / "trials.csv")}
        if self.completed:
            files["history"] = self.plot_history(out / "history.png")
            try:
                files["importances"] = self.plot_importances(out / "importances.png")
            except ConfigError:
                pass  # too few or too uniform trials to rate parameters; the other files stand
            if self.multi_objective:
                files["pareto"] = self.plot_pareto(out / "pareto.png")
        return files


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path) -> Path:
    path = Path(path)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    fig.clear()
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path
