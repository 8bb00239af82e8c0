"""Unrolled differentiation through an inner gradient-descent loop.

The inner loop is written with :func:`torch.func.grad`, so the same code runs under ordinary
autograd (a Python loop over tasks) and under :func:`torch.func.vmap` (tasks batched), and
composes with an outer ``backward()`` for second-order meta-gradients.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor
from torch.func import grad
from torch.utils.checkpoint import checkpoint as _checkpoint

Params = dict[str, Tensor]
LearningRate = float | Tensor | Mapping[str, Tensor | float]


def _lr_for(lr: LearningRate, name: str):
    return lr[name] if isinstance(lr, Mapping) else lr


def gradients(loss_fn: Callable[[Params], Tensor], params: Params, names: list[str], first_order: bool = False,
              use_autograd: bool = False) -> Params:
    """The gradient of ``loss_fn(params)`` with respect to ``params[n]`` for ``n`` in ``names``.

    Args:
        loss_fn: maps a dict of parameters to a scalar loss.
        params: the current parameters.
        names: the parameters to differentiate (the ones the inner loop adapts).
        first_order: return constants (no graph through the gradient: no second-order terms).
        use_autograd: use ``torch.autograd.grad`` even under no functorch transform is active;
            needed inside activation checkpointing, whose saved-tensor hooks ``torch.func`` does
            not support. Not usable under ``vmap``.
    """
    # outside torch.func transforms, plain autograd is used: it is thread-safe (the "threads"
    # batching runs tasks concurrently; torch.func.grad is not) and builds no unused graph
    # for first-order steps
    if use_autograd or torch._C._functorch.peek_interpreter_stack() is None:
        create_graph = not first_order and torch.is_grad_enabled()
        values = [params[n] for n in names]
        inputs = [v if create_graph and v.requires_grad else v.detach().requires_grad_(True) for v in values]
        with torch.enable_grad():
            loss = loss_fn({**params, **dict(zip(names, inputs))})
            found = torch.autograd.grad(loss, inputs, create_graph=create_graph, allow_unused=True)
        return {n: torch.zeros_like(v) if g is None else g for n, v, g in zip(names, values, found)}
    grads = grad(lambda sub: loss_fn({**params, **sub}))({n: params[n] for n in names})
    return {n: g.detach() for n, g in grads.items()} if first_order else grads


def sgd_step(loss_fn: Callable[[Params], Tensor], params: Params, lr: LearningRate,
             first_order: bool = False, adapt: Callable[[str], bool] | None = None,
             use_autograd: bool = False) -> Params:
    """One step ``params - lr * grad(loss_fn)(params)``.

    Args:
        loss_fn: maps a dict of parameters to a scalar loss.
        params: the current parameters.
        lr: a float, a scalar tensor, or a dict of per-parameter tensors (Meta-SGD), which
            may themselves require grad.
        first_order: drop the second-order terms (the gradient is treated as a constant).
        adapt: which parameter names to update (ANIL adapts the head only); default all.
        use_autograd: see :func:`gradients`.
    """
    names = [n for n in params if adapt is None or adapt(n)]
    grads = gradients(loss_fn, params, names, first_order, use_autograd)
    new = dict(params)
    for n in names:
        new[n] = params[n] - _lr_for(lr, n) * grads[n]
    return new


def unroll(step: Callable[[Params], Params], params: Params, steps: int,
           checkpoint: bool = False) -> Params:
    """Apply ``step`` ``steps`` times, keeping the whole graph for backpropagation.

    With ``checkpoint=True`` each step's activations are recomputed during the backward pass
    instead of being stored: memory grows with one step, not ``steps`` of them, for about one
    extra forward per step.
    """
    names = list(params)
    for _ in range(steps):
        if checkpoint and torch.is_grad_enabled():
            # the function is re-run during the backward pass, after this loop has moved on
            values = _checkpoint(lambda *vs: tuple(step(dict(zip(names, vs))).values()),
                                 *(params[n] for n in names), use_reentrant=False)
            params = dict(zip(names, values))
        else:
            params = step(params)
    return params


def inner_sgd(loss_fn: Callable[[Params], Tensor], params: Params, steps: int, lr: LearningRate,
              first_order: bool = False, checkpoint: bool = False,
              adapt: Callable[[str], bool] | None = None) -> Params:
    """``steps`` of gradient descent on ``loss_fn`` from ``params``, differentiable end to end.

    Second order (``first_order=False``) gives MAML's exact meta-gradient; first order gives
    FOMAML's. Example::

        adapted = inner_sgd(lambda p: mse(model_fn(p, xs), ys), params, steps=5, lr=0.01)
        outer = mse(model_fn(adapted, xq), yq)
        outer.backward()
    """
    return unroll(lambda p: sgd_step(loss_fn, p, lr, first_order, adapt, use_autograd=checkpoint),
                  params, steps, checkpoint)
