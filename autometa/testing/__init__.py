"""Conformance checks shipped with the library, for autometa's own components and users' own.

- :func:`check_learner`: seeded determinism, save and reload, meta-gradients reach the
  meta-parameters, buffers untouched, bad input, float64 meta-gradient vs finite differences.
"""

from autometa.testing._learners import CHECKS, check_learner

__all__ = ["CHECKS", "check_learner"]
