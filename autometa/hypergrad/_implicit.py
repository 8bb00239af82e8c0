"""Implicit differentiation of an inner problem solved to (near) stationarity.

For an inner solution ``params*(meta) = argmin inner_loss(params, meta)`` the implicit function
theorem gives ``d outer/d meta = ∂outer/∂meta - (∂²inner/∂meta∂params) v`` where ``v`` solves
``H v = ∂outer/∂params`` with ``H`` the inner Hessian at ``params*``. ``v`` is found with
conjugate gradient or a truncated Neumann series, using only Hessian-vector products.

References: Rajeswaran et al. 2019 (iMAML); Lorraine et al. 2020 (Neumann series).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from autometa.errors import ConfigError

Params = dict[str, Tensor]


def _dot(a: Params, b: Params) -> Tensor:
    return sum((a[k] * b[k]).sum() for k in a)


def _hvp(grads: tuple[Tensor, ...], params: list[Tensor], vector: list[Tensor]) -> list[Tensor]:
    out = torch.autograd.grad(grads, params, grad_outputs=vector, retain_graph=True, allow_unused=True)
    return [torch.zeros_like(p) if o is None else o for o, p in zip(out, params)]


def conjugate_gradient(matvec: Callable[[list[Tensor]], list[Tensor]], b: list[Tensor],
                       iterations: int = 20, tol: float = 1e-10) -> list[Tensor]:
    """Solve ``A x = b`` for a symmetric positive definite ``A`` given by ``matvec``."""
    x = [torch.zeros_like(t) for t in b]
    r = [t.clone() for t in b]
    p = [t.clone() for t in b]
    rr = sum((t * t).sum() for t in r)
    for _ in range(iterations):
        if rr <= tol:
            break
        ap = matvec(p)
        alpha = rr / sum((u * v).sum() for u, v in zip(p, ap))
        x = [u + alpha * v for u, v in zip(x, p)]
        r = [u - alpha * v for u, v in zip(r, ap)]
        rr_new = sum((t * t).sum() for t in r)
        p = [u + (rr_new / rr) * v for u, v in zip(r, p)]
        rr = rr_new
    return x


def neumann_series(matvec: Callable[[list[Tensor]], list[Tensor]], b: list[Tensor],
                   iterations: int = 20, alpha: float = 0.1) -> list[Tensor]:
    """Approximate ``A^{-1} b ≈ alpha Σ_k (I - alpha A)^k b``; converges if ``alpha < 2/λmax``."""
    term = [t.clone() for t in b]
    total = [t.clone() for t in b]
    for _ in range(iterations):
        at = matvec(term)
        term = [u - alpha * v for u, v in zip(term, at)]
        total = [u + v for u, v in zip(total, term)]
    return [alpha * t for t in total]


def implicit_grad(inner_loss: Callable[[Params, Params], Tensor],
                  outer_loss: Callable[[Params, Params], Tensor],
                  solution: Params, meta_params: Params, method: str = "cg",
                  iterations: int = 20, alpha: float = 0.1, tol: float = 1e-10) -> Params:
    """The hypergradient ``d outer_loss(params*(meta), meta) / d meta`` by implicit differentiation.

    Args:
        inner_loss: ``(params, meta_params) -> scalar`` whose minimiser over params is ``solution``.
        outer_loss: ``(params, meta_params) -> scalar``.
        solution: the inner solution (detached or not; it is re-attached here).
        meta_params: tensors to differentiate with respect to (need not require grad).
        method: ``"cg"`` (conjugate gradient) or ``"neumann"``.
        iterations, alpha, tol: solver settings (``alpha`` is the Neumann step size).

    Returns:
        A dict with one gradient per meta-parameter (zeros where it does not matter).
    """
    if method not in ("cg", "neumann"):
        raise ConfigError(f"implicit_grad method must be 'cg' or 'neumann'. Got {method!r}.")
    with torch.enable_grad():
        params = {k: v.detach().requires_grad_(True) for k, v in solution.items()}
        meta = {k: v.detach().requires_grad_(True) for k, v in meta_params.items()}
        p_list, m_list = list(params.values()), list(meta.values())

        outer = outer_loss(params, meta)
        d_outer = torch.autograd.grad(outer, p_list + m_list, allow_unused=True)
        d_outer_p = [torch.zeros_like(p) if g is None else g for g, p in zip(d_outer[: len(p_list)], p_list)]
        d_outer_m = [torch.zeros_like(m) if g is None else g for g, m in zip(d_outer[len(p_list):], m_list)]

        inner_grads = torch.autograd.grad(inner_loss(params, meta), p_list, create_graph=True)
        matvec = lambda v: _hvp(inner_grads, p_list, v)
        if method == "cg":
            v = conjugate_gradient(matvec, d_outer_p, iterations, tol)
        else:
            v = neumann_series(matvec, d_outer_p, iterations, alpha)
        mixed = torch.autograd.grad(inner_grads, m_list, grad_outputs=v, allow_unused=True)
    return {k: d - (0 if c is None else c) for k, d, c in zip(meta, d_outer_m, mixed)}
