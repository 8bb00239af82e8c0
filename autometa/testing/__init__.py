"""Conformance suites shipped with autometa, for its own components and for yours (as Optuna ships
``optuna.testing``): a new learner or filler is checked by one call.

- :func:`check_learner`: seeded determinism, save and reload, meta-gradients reach the
  meta-parameters, buffers untouched, bad input, float64 meta-gradient vs finite differences.
- :func:`check_filler`: a hand-crafted filler equals its plain-torch equivalent step by step, purity,
  a learned filler's float64 meta-gradient, save/reload/resume, its search space on every backend.
"""

from autometa.testing._fillers import check_filler
from autometa.testing._learners import CHECKS, check_learner

__all__ = ["CHECKS", "check_filler", "check_learner"]
