"""Confidence intervals as the few-shot literature reports them (used by the run loop).

Comparisons of fillers, whose test tasks are nested in seeds, use :mod:`autometa.compare._stats`.
"""

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


def format_ci(stats: dict, scale: float = 1.0, digits: int = 2) -> str:
    """``"98.12 ± 0.31"`` (``scale=100`` turns accuracies into percentages)."""
    if stats.get("mean") is None:
        return "n/a"
    if stats.get("ci95") is None:
        return f"{stats['mean'] * scale:.{digits}f}"
    return f"{stats['mean'] * scale:.{digits}f} ± {stats['ci95'] * scale:.{digits}f}"
