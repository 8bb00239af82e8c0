"""Confidence intervals and paired comparisons, as the few-shot literature reports them."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def t_quantile(confidence: float, dof: int) -> float:
    """The two-sided Student-t quantile, e.g. 2.262 for 95% with 9 degrees of freedom."""
    from scipy.stats import t  # scipy comes with scikit-learn; imported here to keep start-up fast

    return float(t.ppf(0.5 + confidence / 2, dof))


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> dict:
    """Mean and half-width of the ``confidence`` interval of the mean (Student t).

    Returns ``{"mean", "ci95", "std", "n"}``; with one value the interval is infinite
    (reported as ``None`` so that JSON stays valid), never a made-up zero.
    """
    x = np.asarray(values, dtype=np.float64)
    n = int(x.size)
    if n == 0:
        return {"mean": None, "ci95": None, "std": None, "n": 0}
    mean = float(x.mean())
    if n == 1:
        return {"mean": mean, "ci95": None, "std": None, "n": 1}
    std = float(x.std(ddof=1))
    half = t_quantile(confidence, n - 1) * std / math.sqrt(n)
    return {"mean": mean, "ci95": half, "std": std, "n": n}


def paired_difference(candidate: Sequence[float], reference: Sequence[float],
                      confidence: float = 0.95) -> dict:
    """Paired difference ``candidate - reference`` over the same tasks or seeds.

    Returns the mean difference with its CI, a two-sided paired t-test p-value and
    ``significant`` (the CI excludes zero). Identical inputs give a difference of exactly zero,
    reported as not significant.
    """
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
    from scipy.stats import t

    stat = out["mean"] / (out["std"] / math.sqrt(out["n"]))
    p = float(2 * t.sf(abs(stat), out["n"] - 1))
    return {**out, "p_value": p, "significant": bool(abs(out["mean"]) > out["ci95"])}


def format_ci(stats: dict, scale: float = 1.0, digits: int = 2) -> str:
    """``"98.12 ± 0.31"`` (``scale=100`` turns accuracies into percentages)."""
    if stats.get("mean") is None:
        return "n/a"
    if stats.get("ci95") is None:
        return f"{stats['mean'] * scale:.{digits}f}"
    return f"{stats['mean'] * scale:.{digits}f} ± {stats['ci95'] * scale:.{digits}f}"
