"""The bilevel engine: meta-gradients through inner problems.

Knows nothing about tasks, datasets, slots or search; everything here maps dicts of tensors to
dicts of tensors.

- :class:`InnerProblem` and the estimators (:class:`Unrolled`, :class:`Implicit`,
  :class:`ReptileStep`, :class:`ES`, :class:`TruncatedBPTT`): one interface for every way to
  compute d(outer loss)/d(meta) (see :mod:`autometa.hypergrad._estimators`).
- :func:`solve`, :func:`inner_sgd`, :func:`unroll`, :func:`gradients`: unrolled inner loops.
- :func:`implicit_grad`: implicit differentiation with conjugate gradient or a Neumann series.
- :func:`precision`: the precision policy of meta-gradients (exact float32, TF32, bf16 autocast).
- :func:`batched`: run a per-task function over a meta-batch, looped, threaded or with ``vmap``
  (in chunks that fit a memory budget, :class:`ChunkPlan`).
"""

from autometa.hypergrad._batching import (
    BATCHING_MODES,
    ChunkPlan,
    batched,
    check_memory_budget,
    default_batching,
    free_memory,
    memory_budget,
    vmap_hazard,
)
from autometa.hypergrad._estimators import (
    ES,
    ESTIMATORS,
    Estimator,
    Implicit,
    InnerProblem,
    ReptileStep,
    TruncatedBPTT,
    Unrolled,
    build_estimator,
    solve,
)
from autometa.hypergrad._implicit import conjugate_gradient, implicit_grad, neumann_series
from autometa.hypergrad._precision import PRECISIONS, check_precision, precision, precision_state
from autometa.hypergrad._unrolled import gradients, inner_sgd, sgd_step, unroll

__all__ = [
    "BATCHING_MODES", "ChunkPlan", "ES", "ESTIMATORS", "Estimator", "Implicit", "InnerProblem", "PRECISIONS",
    "ReptileStep", "TruncatedBPTT", "Unrolled", "batched", "build_estimator", "check_memory_budget",
    "check_precision", "conjugate_gradient", "default_batching", "free_memory", "gradients", "implicit_grad",
    "inner_sgd", "memory_budget", "neumann_series", "precision", "precision_state", "sgd_step", "solve", "unroll",
    "vmap_hazard",
]
