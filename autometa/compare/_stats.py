"""Statistics of a comparison: test tasks nested in seeds.

Each filler of a comparison is meta-trained once per seed and tested on the same ``T`` test
tasks per seed, so its per-task numbers form an ``S x T`` array whose rows are not
independent of each other's tasks: the seed (initialization, meta-training stream) moves every
task of a row together. Treating the ``S * T`` numbers as independent overstates confidence;
this module uses the balanced random-intercept model instead (tasks nested in seeds,
``value[s, t] = mean + seed_effect[s] + task_noise[s, t]``). With equal task counts per seed its
REML estimate of the grand mean is the mean of the seed means and the exact interval is Student's
t on ``S - 1`` degrees of freedom from the between-seed mean square (Searle, Casella & McCulloch,
*Variance Components*, 1992, ch. 3). With fewer than three seeds no between-seed claim is
possible (one degree of freedom); the interval given then is over test tasks with the seeds held
fixed, and it says so.

Intervals of bounded metrics (accuracy in [0, 1]) are intersected with the bounds: the true mean
lies inside them, so the intersection keeps the coverage and never reaches 105%.

References: Searle, Casella & McCulloch, Variance Components (1992); Bouthillier et al.,
"Accounting for variance in machine learning benchmarks", MLSys 2021.
"""

from __future__ import annotations

import math

import numpy as np

MIN_SEEDS = 3  # fewer seeds leave at most one degree of freedom between seeds
LEVELS = {"seeds": "tasks nested in seeds (random-intercept model, t on seeds - 1 dof)",
          "tasks": "test tasks with the seeds held fixed (no between-seed claim)"}


def _t_ppf(q, dof):
    from scipy.stats import t  # scipy comes with scikit-learn; imported here to keep start-up fast

    return t.ppf(q, dof)


def _t_sf(x, dof):
    from scipy.stats import t

    return t.sf(x, dof)


def nested_interval(values, confidence: float = 0.95, bounds: tuple[float, float] | None = None) -> dict:
    """Mean and ``confidence`` interval of per-task values of shape ``(..., seeds, tasks)``.

    Leading dimensions are batched (one simulation per row in the tests), so arrays come back
    for them; a plain ``(seeds, tasks)`` input gives floats.

    Args:
        values: per-task numbers, one row per seed, equal task counts per seed.
        confidence: coverage of the interval.
        bounds: ``(low, high)`` that the metric cannot leave (``(0, 1)`` for accuracy).

    Returns:
        ``{"mean", "low", "high", "p_value", "level", "n_seeds", "n_tasks", "sd_seed", "sd_task"}``:
        ``level`` is ``"seeds"`` (the nested model; needs >= 3 seeds) or ``"tasks"`` (seeds
        held fixed); ``p_value`` tests a mean of 0 (meaningful for paired differences) at that
        level; ``sd_seed`` is the standard deviation of the seed means and ``sd_task`` the pooled
        within-seed standard deviation of tasks.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.ndim < 2 or x.shape[-1] < 1 or x.shape[-2] < 1:
        raise ValueError(f"values must have shape (..., seeds, tasks). Got {x.shape}.")
    seeds, tasks = x.shape[-2], x.shape[-1]
    seed_means = x.mean(axis=-1)
    mean = seed_means.mean(axis=-1)
    sd_task = np.sqrt(x.var(axis=-1, ddof=1).mean(axis=-1)) if tasks > 1 else np.full(mean.shape, np.nan)
    sd_seed = seed_means.std(axis=-1, ddof=1) if seeds > 1 else np.full(mean.shape, np.nan)
    if seeds >= MIN_SEEDS:
        level, dof = "seeds", seeds - 1
        se = sd_seed / math.sqrt(seeds)
    else:
        level, dof = "tasks", seeds * (tasks - 1)
        se = sd_task / math.sqrt(seeds * tasks)
    if dof < 1:
        half, p = np.full(mean.shape, np.inf), np.ones(mean.shape)
    else:
        half = _t_ppf(0.5 + confidence / 2, dof) * se
        with np.errstate(divide="ignore", invalid="ignore"):
            stat = np.where(se > 0, np.abs(mean) / np.where(se > 0, se, 1.0), np.where(mean != 0, np.inf, 0.0))
        p = np.minimum(1.0, 2 * _t_sf(stat, dof))
    low, high = mean - half, mean + half
    if bounds is not None:
        low, high = np.clip(low, *bounds), np.clip(high, *bounds)
    out = {"mean": mean, "low": low, "high": high, "p_value": p, "level": level, "n_seeds": seeds,
           "n_tasks": tasks, "sd_seed": sd_seed, "sd_task": sd_task}
    if x.ndim == 2:
        out = {k: (float(v) if np.isfinite(v) else None) if isinstance(v, (np.ndarray, np.floating)) else v
               for k, v in out.items()}
    return out


def nested_difference(candidate, reference, confidence: float = 0.95) -> dict:
    """Paired difference ``candidate - reference`` per seed and task, as :func:`nested_interval`.

    Adds ``significant`` (the interval excludes 0; only at the ``"seeds"`` level, since with
    fewer than three seeds nothing can be said beyond these seeds), ``significant_given_seeds``
    (the same at the ``"tasks"`` level, else None) and ``per_seed`` (the difference of each seed's
    means). Identical inputs give a difference of exactly 0. Leading dimensions are batched.
    """
    a, b = np.asarray(candidate, np.float64), np.asarray(reference, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"Paired values need equal shapes (seeds, tasks). Got {a.shape} and {b.shape}; "
                         f"test every filler on the same seeds and tasks.")
    d = a - b
    out = nested_interval(d, confidence)
    low = np.asarray(out["low"] if out["low"] is not None else -np.inf, dtype=np.float64)
    high = np.asarray(out["high"] if out["high"] is not None else np.inf, dtype=np.float64)
    excludes_zero = (low > 0) | (high < 0)
    at_seeds = out["level"] == "seeds"
    out["significant"] = excludes_zero if at_seeds else np.zeros_like(excludes_zero)
    out["significant_given_seeds"] = None if at_seeds else excludes_zero
    per_seed = d.mean(axis=-1)
    if d.ndim == 2:
        out["significant"] = bool(out["significant"])
        if not at_seeds:
            out["significant_given_seeds"] = bool(excludes_zero)
        per_seed = [float(v) for v in per_seed]
    out["per_seed"] = per_seed
    return out


def format_p(p: float | None, floor: float = 0.001) -> str:
    """``"p = 0.012"``, or a bound such as ``"p < 0.001"``: a test never proves p = 0."""
    if p is None or not np.isfinite(p):
        return "p n/a"
    if p < floor:
        return f"p < {floor:g}"
    return f"p = {p:.2g}" if p < 0.1 else f"p = {p:.2f}"


def format_interval(stats: dict, scale: float = 1.0, digits: int = 2) -> str:
    """``"62.39 [55.10, 69.68]"``: the mean and its interval, which may be asymmetric at a bound."""
    if stats.get("mean") is None:
        return "n/a"
    mean = stats["mean"] * scale
    if stats.get("low") is None or stats.get("high") is None:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} [{stats['low'] * scale:.{digits}f}, {stats['high'] * scale:.{digits}f}]"


def paired_difference(candidate, reference, confidence: float = 0.95) -> dict:
    """Paired difference over one level (tasks or seeds): mean, CI half-width, t-test p-value.

    Kept for flat samples; comparisons use :func:`nested_difference`.
    """
    from autometa.experiment._stats import mean_ci

    a, b = np.asarray(candidate, np.float64), np.asarray(reference, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"Paired values need equal lengths. Got {a.shape} and {b.shape}.")
    d = a - b
    out = mean_ci(d, confidence)
    if out["n"] < 2:
        return {**out, "p_value": None, "significant": False}
    if out["std"] == 0.0:
        significant = out["mean"] != 0.0
        return {**out, "ci95": 0.0, "p_value": 0.0 if significant else 1.0, "significant": significant}
    stat = out["mean"] / (out["std"] / math.sqrt(out["n"]))
    p = float(2 * _t_sf(abs(stat), out["n"] - 1))
    return {**out, "p_value": p, "significant": bool(abs(out["mean"]) > out["ci95"])}
