import pytest
import torch

from autometa.errors import ConfigError
from autometa.slots.optimizer import HANDCRAFTED, SGD, Adam, Momentum, Nesterov, RMSprop, build_rule

# (functional rule, equivalent torch.optim constructor)
CASES = {
    "sgd": (lambda: SGD(lr=0.05), lambda p: torch.optim.SGD(p, lr=0.05)),
    "sgd_wd": (lambda: SGD(lr=0.05, weight_decay=0.1),
               lambda p: torch.optim.SGD(p, lr=0.05, weight_decay=0.1)),
    "momentum": (lambda: Momentum(lr=0.02, momentum=0.8),
                 lambda p: torch.optim.SGD(p, lr=0.02, momentum=0.8)),
    "nesterov": (lambda: Nesterov(lr=0.02, momentum=0.9, weight_decay=0.01),
                 lambda p: torch.optim.SGD(p, lr=0.02, momentum=0.9, nesterov=True, weight_decay=0.01)),
    "rmsprop": (lambda: RMSprop(lr=0.01, alpha=0.9), lambda p: torch.optim.RMSprop(p, lr=0.01, alpha=0.9)),
    "adam": (lambda: Adam(lr=0.03, betas=(0.8, 0.99)),
             lambda p: torch.optim.Adam(p, lr=0.03, betas=(0.8, 0.99))),
    "adam_wd": (lambda: Adam(lr=0.03, weight_decay=0.05),
                lambda p: torch.optim.Adam(p, lr=0.03, weight_decay=0.05)),
}


def regression_problem():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(16, 3, generator=gen, dtype=torch.float64)
    y = torch.randn(16, 2, generator=gen, dtype=torch.float64)
    init = {"weight": torch.randn(3, 2, generator=gen, dtype=torch.float64),
            "bias": torch.randn(2, generator=gen, dtype=torch.float64)}

    def loss_fn(params):
        return ((x @ params["weight"] + params["bias"] - y) ** 2).mean()

    return init, loss_fn


@pytest.mark.parametrize("case", sorted(CASES))
def test_trajectory_equals_torch_optim(case):
    make_rule, make_torch = CASES[case]
    init, loss_fn = regression_problem()
    rule = make_rule()
    params = {k: v.clone() for k, v in init.items()}
    state = rule.init(params)
    reference = {k: v.clone().requires_grad_(True) for k, v in init.items()}
    torch_opt = make_torch(list(reference.values()))
    for _ in range(15):
        params = {k: v.detach().requires_grad_(True) for k, v in params.items()}
        grads = dict(zip(params, torch.autograd.grad(loss_fn(params), list(params.values()))))
        params, state = rule.update(grads, state, params)
        torch_opt.zero_grad()
        loss_fn(reference).backward()
        torch_opt.step()
    for k in params:
        torch.testing.assert_close(params[k].detach(), reference[k].detach(), rtol=1e-10, atol=1e-12)
    assert int(state["step"]) == 15


@pytest.mark.parametrize("name", ["sgd", "momentum", "nesterov", "rmsprop", "adam"])
def test_learning_rate_hypergradient_equals_finite_differences(name):
    """lr as a tensor requiring grad: d(loss after 5 unrolled steps)/d lr, checked in float64."""
    init, loss_fn = regression_problem()
    extra = {"eps_root": 1e-12} if name == "adam" else {}

    def final_loss(lr):
        rule = HANDCRAFTED[name](lr=lr, **extra)
        params = {k: v.clone().requires_grad_(True) for k, v in init.items()}
        state = rule.init(params)
        for _ in range(5):
            grads = dict(zip(params, torch.autograd.grad(loss_fn(params), list(params.values()),
                                                         create_graph=True)))
            params, state = rule.update(grads, state, params)
        return loss_fn(params)

    lr = torch.tensor(0.01, dtype=torch.float64, requires_grad=True)
    (analytic,) = torch.autograd.grad(final_loss(lr), lr)
    h = 1e-6
    numeric = (final_loss(torch.tensor(0.01 + h, dtype=torch.float64)).detach()
               - final_loss(torch.tensor(0.01 - h, dtype=torch.float64)).detach()) / (2 * h)
    torch.testing.assert_close(analytic, numeric, rtol=1e-5, atol=1e-8)
    assert HANDCRAFTED[name](lr=lr).meta_params() == {"lr": lr}


def test_update_is_out_of_place():
    init, _ = regression_problem()
    rule = Adam(lr=0.1)
    state = rule.init(init)
    before = {k: v.clone() for k, v in init.items()}
    grads = {k: torch.ones_like(v) for k, v in init.items()}
    rule.update(grads, state, init)
    for k in init:
        assert torch.equal(init[k], before[k])
        assert torch.equal(state[f"exp_avg/{k}"], torch.zeros_like(init[k]))


@pytest.mark.parametrize("name", sorted(HANDCRAFTED))
def test_space_is_in_the_neutral_format(name):
    space = HANDCRAFTED[name].space()
    assert space["lr"]["log"] is True and len(space["lr"]["float"]) == 2
    low, high = space["lr"]["float"]
    assert 0 < low < high
    space["lr"]["float"] = [1, 2]  # a copy: mutating it leaves the class alone
    assert HANDCRAFTED[name].space()["lr"]["float"] != [1, 2]


def test_bad_hyperparameters_say_what_and_got_what():
    with pytest.raises(ConfigError, match=r"`lr` of SGD must be > 0.0. Got -0.1"):
        SGD(lr=-0.1)
    with pytest.raises(ValueError, match="betas"):
        Adam(betas=(0.9,))
    with pytest.raises(ConfigError, match="momentum"):
        Momentum(momentum=1.5)
    with pytest.raises(ConfigError, match="Unknown optimizer 'lion'"):
        build_rule({"name": "lion"})
    assert isinstance(build_rule({"name": "Nesterov", "lr": 0.1}), Nesterov)
    assert isinstance(build_rule({"name": "rmsprop"}), RMSprop)
