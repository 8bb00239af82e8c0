"""Implicit differentiation against unrolling on a strongly convex inner problem."""

import torch

from autometa.hypergrad import implicit_grad, inner_sgd


def problem(seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(12, 4, generator=g, dtype=torch.float64)
    b = torch.randn(12, generator=g, dtype=torch.float64)
    q = torch.randn(8, 4, generator=g, dtype=torch.float64)
    c = torch.randn(8, generator=g, dtype=torch.float64)
    return a, b, q, c


def inner_loss(p, m, a, b, reg=2.0):
    # ridge regression pulled toward the meta-parameters: strongly convex in p
    return ((a @ p["w"] - b) ** 2).mean() + 0.5 * reg * ((p["w"] - m["w"]) ** 2).sum()


def outer_loss(p, m, q, c):
    return ((q @ p["w"] - c) ** 2).mean()


def unrolled_hypergrad(meta, a, b, q, c, steps=400, lr=0.1):
    m = {"w": meta.clone().requires_grad_(True)}
    sol = inner_sgd(lambda p: inner_loss(p, m, a, b), {"w": m["w"]}, steps, lr)
    (g,) = torch.autograd.grad(outer_loss(sol, m, q, c), [m["w"]])
    return g, {k: v.detach() for k, v in sol.items()}


def test_implicit_cg_and_neumann_match_unrolled_at_convergence():
    a, b, q, c = problem()
    meta = torch.randn(4, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    unrolled, solution = unrolled_hypergrad(meta, a, b, q, c)
    kwargs = dict(inner_loss=lambda p, m: inner_loss(p, m, a, b), outer_loss=lambda p, m: outer_loss(p, m, q, c),
                  solution=solution, meta_params={"w": meta})
    cg = implicit_grad(method="cg", iterations=50, **kwargs)["w"]
    neumann = implicit_grad(method="neumann", iterations=400, alpha=0.1, **kwargs)["w"]
    assert torch.allclose(cg, unrolled, rtol=1e-6, atol=1e-10)
    assert torch.allclose(neumann, unrolled, rtol=1e-6, atol=1e-10)


def test_implicit_matches_closed_form():
    a, b, q, c = problem(1)
    reg = 2.0
    meta = torch.zeros(4, dtype=torch.float64)
    # closed form: w* = (2A'A/n + reg I)^-1 (2A'b/n + reg m); dw*/dm = reg (2A'A/n + reg I)^-1
    h = 2 * a.T @ a / len(a) + reg * torch.eye(4, dtype=torch.float64)
    w = torch.linalg.solve(h, 2 * a.T @ b / len(a) + reg * meta)
    dout = 2 * q.T @ (q @ w - c) / len(q)
    expected = reg * torch.linalg.solve(h, dout)
    got = implicit_grad(lambda p, m: inner_loss(p, m, a, b, reg), lambda p, m: outer_loss(p, m, q, c),
                        {"w": w}, {"w": meta}, method="cg", iterations=50)["w"]
    assert torch.allclose(got, expected, rtol=1e-8)


def test_unknown_method_is_a_config_error():
    import pytest

    from autometa.errors import AutometaError

    with pytest.raises(AutometaError, match="cg"):
        implicit_grad(lambda p, m: p["w"].sum(), lambda p, m: p["w"].sum(), {"w": torch.ones(1)},
                      {"w": torch.ones(1)}, method="newton")
