"""Conformance suites shipped with autometa, for its own components and for yours (as Optuna ships
``optuna.testing``): a new learner, filler or search backend is checked by one call.

- :func:`check_learner`: seeded determinism, save and reload, meta-gradients reach the
  meta-parameters, buffers untouched, bad input, float64 meta-gradient vs finite differences.
- :func:`check_filler`: a hand-crafted filler equals its plain-torch equivalent step by step, purity,
  a learned filler's float64 meta-gradient, save/reload/resume, its search space on every backend.
- :func:`check_backend`: a search backend's result format, pruned/failed/diverged records, seeded
  determinism, resume without duplicates, bad spaces as ConfigError.
"""

from autometa.testing._backends import check_backend
from autometa.testing._fillers import check_filler
from autometa.testing._learners import CHECKS, check_learner

__all__ = ["CHECKS", "check_backend", "check_filler", "check_learner"]
