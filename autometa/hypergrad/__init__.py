"""The bilevel engine: meta-gradients through inner problems.

Knows nothing about tasks, datasets or search; everything here maps dicts of tensors to
dicts of tensors.

- :func:`inner_sgd` / :func:`unroll`: unrolled differentiation (second order, first order,
  optionally checkpointed).
- :func:`implicit_grad`: implicit differentiation with conjugate gradient or a Neumann series.
- :func:`batched`: run a per-task function over a meta-batch, looped or with ``vmap``.
"""

from autometa.hypergrad._batching import BATCHING_MODES, batched, default_batching, vmap_hazard
from autometa.hypergrad._implicit import conjugate_gradient, implicit_grad, neumann_series
from autometa.hypergrad._unrolled import inner_sgd, sgd_step, unroll

__all__ = [
    "BATCHING_MODES", "batched", "default_batching", "vmap_hazard", "conjugate_gradient", "implicit_grad",
    "neumann_series", "inner_sgd", "sgd_step", "unroll",
]
