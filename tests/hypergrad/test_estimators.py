"""Every hypergradient estimator against a float64 reference written out by hand.

The problems are small ridge-like regressions in float64 whose reference meta-gradient is known
either in closed form or from ``torch.autograd.grad(create_graph=True)`` step by step.
"""

import pytest
import torch

from autometa.errors import ConfigError
from autometa.hypergrad import ES, Implicit, InnerProblem, ReptileStep, TruncatedBPTT, Unrolled, build_estimator, solve
from autometa.slots.optimizer import SGD, Adam, LearnedRates
from tests.hypergrad.test_implicit import problem as data  # the same ridge data


def make_problem(rule, steps, reg=0.0, seed=0):
    """A linear regression inner problem: inner loss on (a, b), outer loss on (q, c), init = meta['init.w']."""
    a, b, q, c = data(seed)

    def inner(p, m):
        fit = ((a @ p["w"] - b) ** 2).mean()
        return fit + 0.5 * reg * ((p["w"] - m["init.w"]) ** 2).sum() if reg else fit

    def outer(p, m):
        loss = ((q @ p["w"] - c) ** 2).mean()
        return loss, {"loss": loss.detach()}

    def sub(m):
        return {k[10:]: v for k, v in m.items() if k.startswith("optimizer.")}

    return InnerProblem(init=lambda m: {"w": m["init.w"]}, inner_loss=inner, outer_loss=outer,
                        init_state=lambda p, m: rule.init(p, sub(m)),
                        update=lambda g, s, p, m: rule.update(g, s, p, sub(m)),
                        steps=steps, init_keys={"w": "init.w"}), (a, b, q, c)


def meta_init(seed=3):
    return torch.randn(4, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)).requires_grad_(True)


def grad_of(estimator, problem, meta):
    surrogate, metrics = estimator(problem, meta)
    names = [k for k, v in meta.items() if v.requires_grad]
    found = torch.autograd.grad(surrogate, [meta[k] for k in names], allow_unused=True) if surrogate.requires_grad \
        else [None] * len(names)
    return {k: torch.zeros_like(meta[k]) if g is None else g for k, g in zip(names, found)}, metrics


def naive_unrolled(w0, lr, steps, a, b, q, c, first_order=False):
    w = w0
    for _ in range(steps):
        loss = ((a @ w - b) ** 2).mean()
        (g,) = torch.autograd.grad(loss, [w], create_graph=not first_order)
        w = w - lr * g
    return torch.autograd.grad(((q @ w - c) ** 2).mean(), [w0])[0]


@pytest.mark.parametrize("first_order", [False, True])
@pytest.mark.parametrize("checkpoint", [False, True])
def test_unrolled_equals_handwritten_float64(first_order, checkpoint):
    problem, (a, b, q, c) = make_problem(SGD(lr=0.05), steps=3)
    meta = {"init.w": meta_init()}
    got, _ = grad_of(Unrolled(first_order=first_order, checkpoint=checkpoint), problem, meta)
    expected = naive_unrolled(meta["init.w"], 0.05, 3, a, b, q, c, first_order)
    assert torch.allclose(got["init.w"], expected, rtol=1e-10, atol=1e-12)


def test_unrolled_with_adam_and_a_learned_lr_equals_finite_differences():
    """Second order through Adam's state, with respect to both the init and Adam's (learned) lr."""
    lr = torch.tensor(0.05, dtype=torch.float64, requires_grad=True)
    rule = Adam(lr=lr, eps_root=1e-12)
    problem, _ = make_problem(rule, steps=4)
    meta = {"init.w": meta_init(), "optimizer.lr": lr}
    got, _ = grad_of(Unrolled(), problem, meta)

    def value(w, lr_value):
        return Unrolled()(problem, {"init.w": w, "optimizer.lr": lr_value}, training=True)[0].detach()

    eps = 1e-6
    w = meta["init.w"].detach()
    for i in range(4):
        e = torch.zeros(4, dtype=torch.float64)
        e[i] = eps
        fd = (value(w + e, lr.detach()) - value(w - e, lr.detach())) / (2 * eps)
        assert torch.isclose(got["init.w"][i], fd, rtol=1e-6, atol=1e-9)
    fd_lr = (value(w, lr.detach() + eps) - value(w, lr.detach() - eps)) / (2 * eps)
    assert torch.isclose(got["optimizer.lr"], fd_lr, rtol=1e-6, atol=1e-9)


def test_learned_rates_equal_metasgd_written_by_hand():
    rates = LearnedRates(lr=0.05)
    rates.build({"w": torch.zeros(4, dtype=torch.float64)})
    problem, (a, b, q, c) = make_problem(rates, steps=2)
    meta = {"init.w": meta_init(), "optimizer.lrs.w": rates.lrs["w"]}
    got, _ = grad_of(Unrolled(), problem, meta)
    w0, lrs = meta["init.w"], meta["optimizer.lrs.w"]
    w = w0
    for _ in range(2):
        (g,) = torch.autograd.grad(((a @ w - b) ** 2).mean(), [w], create_graph=True)
        w = w - lrs * g
    expected = torch.autograd.grad(((q @ w - c) ** 2).mean(), [w0, lrs])
    assert torch.allclose(got["init.w"], expected[0], rtol=1e-10)
    assert torch.allclose(got["optimizer.lrs.w"], expected[1], rtol=1e-10)


def test_implicit_equals_the_closed_form_of_a_proximal_ridge_problem():
    reg = 2.0
    problem, (a, b, q, c) = make_problem(SGD(lr=0.1), steps=400, reg=reg)
    meta = {"init.w": meta_init()}
    got, _ = grad_of(Implicit(method="cg", iterations=50), problem, meta)
    h = 2 * a.T @ a / len(a) + reg * torch.eye(4, dtype=torch.float64)
    w = torch.linalg.solve(h, 2 * a.T @ b / len(a) + reg * meta["init.w"].detach())
    expected = reg * torch.linalg.solve(h, 2 * q.T @ (q @ w - c) / len(q))
    assert torch.allclose(got["init.w"], expected, rtol=1e-7)
    neumann, _ = grad_of(Implicit(method="neumann", iterations=400, alpha=0.1), problem, meta)
    assert torch.allclose(neumann["init.w"], expected, rtol=1e-6)


def test_reptile_direction_is_init_minus_adapted():
    problem, (a, b, q, c) = make_problem(SGD(lr=0.05), steps=5)
    meta = {"init.w": meta_init()}
    got, _ = grad_of(ReptileStep(), problem, meta)
    w = meta["init.w"].detach()
    for _ in range(5):
        w = w - 0.05 * 2 * a.T @ (a @ w - b) / len(a)
    assert torch.allclose(got["init.w"], meta["init.w"].detach() - w, rtol=1e-12)


def test_es_is_seeded_and_estimates_the_gradient_of_a_quadratic():
    """For a quadratic outer loss the Gaussian-smoothed gradient equals the true gradient, so the
    antithetic estimate converges to the unrolled one; one seed gives one answer."""
    problem, _ = make_problem(SGD(lr=0.05), steps=2)
    meta = {"init.w": meta_init()}
    exact, _ = grad_of(Unrolled(), problem, meta)
    first, _ = grad_of(ES(sigma=0.05, samples=4000, seed=1), problem, meta)
    again, _ = grad_of(ES(sigma=0.05, samples=4000, seed=1), problem, meta)
    assert torch.equal(first["init.w"], again["init.w"])
    error = (first["init.w"] - exact["init.w"]).norm() / exact["init.w"].norm()
    assert error < 0.1, error
    few, _ = grad_of(ES(sigma=0.05, samples=40, seed=1), problem, meta)
    assert (few["init.w"] - exact["init.w"]).norm() > (first["init.w"] - exact["init.w"]).norm()


def test_truncated_bptt_differentiates_one_truncation_and_carries_a_detached_state():
    problem, (a, b, q, c) = make_problem(SGD(lr=0.05), steps=6)
    meta = {"init.w": meta_init()}
    estimator = TruncatedBPTT(length=2, horizon=4, first_order=False)
    first, _ = grad_of(estimator, problem, meta)
    w0 = meta["init.w"]
    w, total = w0, 0.0
    for _ in range(2):
        (g,) = torch.autograd.grad(((a @ w - b) ** 2).mean(), [w], create_graph=True)
        w = w - 0.05 * g
        total = total + ((q @ w - c) ** 2).mean()
    (expected,) = torch.autograd.grad(total / 2, [w0])
    assert torch.allclose(first["init.w"], expected, rtol=1e-10)
    # the second truncation starts from the carried (detached) iterate: no gradient reaches the init
    second, _ = grad_of(estimator, problem, meta)
    assert torch.equal(second["init.w"], torch.zeros(4, dtype=torch.float64))
    # after `horizon` steps a new problem starts from the init again: the first truncation repeats
    third, _ = grad_of(estimator, problem, meta)
    assert torch.allclose(third["init.w"], expected, rtol=1e-10)


def test_solve_with_a_rule_equals_torch_optim():
    """The inner loop with the Adam filler follows torch.optim.Adam step by step."""
    problem, (a, b, q, c) = make_problem(Adam(lr=0.05), steps=5)
    w0 = meta_init().detach()
    adapted = solve(problem, {"init.w": w0}, first_order=True)["w"]
    w = w0.clone().requires_grad_(True)
    opt = torch.optim.Adam([w], lr=0.05)
    for _ in range(5):
        opt.zero_grad()
        ((a @ w - b) ** 2).mean().backward()
        opt.step()
    assert torch.allclose(adapted, w.detach(), rtol=1e-12, atol=1e-14)


def test_build_estimator_names_and_errors():
    assert isinstance(build_estimator("implicit"), Implicit)
    assert build_estimator({"name": "es", "sigma": 0.1}).sigma == 0.1
    with pytest.raises(ConfigError, match="Choose one of"):
        build_estimator("unroled")
    with pytest.raises(ConfigError, match="multiple"):
        TruncatedBPTT(length=3, horizon=10)
    with pytest.raises(ConfigError, match="sigma"):
        ES(sigma=0)
