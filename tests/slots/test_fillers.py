"""Every registered filler passes autometa.testing.check_filler; the checks catch planted bugs."""

import pytest
import torch
import torch.nn.functional as F

from autometa.errors import ConfigError
from autometa.learners import MAML, build_learner
from autometa.nets import MLP
from autometa.slots import FILLERS, build_filler, register_filler
from autometa.slots.optimizer import SGD, LearnedRates
from autometa.tasks import TaskBatch
from autometa.testing import check_filler
from autometa.testing._fillers import check_meta_gradient, check_reference


def _focal(outputs, targets, gamma=2.0):
    p = torch.softmax(outputs, -1).gather(-1, targets[:, None]).squeeze(-1)
    return -((1 - p) ** gamma) * torch.log(p)


def _learned_rates_reference(grads, state, params):
    return {k: p - 0.3 * grads[k] for k, p in params.items()}, state


CASES = {
    ("optimizer", "sgd"): ({"lr": 0.1, "weight_decay": 0.01},
                          lambda ps: torch.optim.SGD(ps, lr=0.1, weight_decay=0.01)),
    ("optimizer", "momentum"): ({"lr": 0.1}, lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9)),
    ("optimizer", "nesterov"): ({"lr": 0.1}, lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True)),
    ("optimizer", "rmsprop"): ({"lr": 0.01}, lambda ps: torch.optim.RMSprop(ps, lr=0.01)),
    ("optimizer", "adam"): ({"lr": 0.01}, lambda ps: torch.optim.Adam(ps, lr=0.01)),
    ("optimizer", "learned_rates"): ({"lr": 0.3}, _learned_rates_reference),
    ("optimizer", "lstm"): ({"hidden_size": 4}, None),
    ("loss", "cross_entropy"): ({}, lambda o, t: F.cross_entropy(o, t, reduction="none")),
    ("loss", "label_smoothing"): ({"smoothing": 0.2},
                                  lambda o, t: F.cross_entropy(o, t, reduction="none", label_smoothing=0.2)),
    ("loss", "focal"): ({"gamma": 2.0}, _focal),
    ("loss", "mse"): ({}, lambda o, t: ((o - t) ** 2).mean(-1)),
    ("loss", "learned"): ({"hidden": [8]}, None),
    # the weighting slot and GCE: references and planted-bug tests in tests/slots/test_weighting.py
    ("loss", "generalized_cross_entropy"): ({"q": 0.7}, None),
    ("weighting", "uniform"): ({}, None),
    ("weighting", "meta_weight_net"): ({"hidden": 8}, None),
    ("weighting", "l2rw"): ({}, None),
    # the reward slot: references and planted-bug tests in tests/slots/test_reward.py
    ("reward", "extrinsic"): ({}, None),
    ("reward", "count_bonus"): ({"observation_dim": 4}, None),
    ("reward", "reward_net"): ({"observation_dim": 4, "num_actions": 2, "hidden": 8}, None),
    ("reward", "frozen_reward_net"): ({"observation_dim": 4, "num_actions": 2, "hidden": 8}, None),
    # architecture slot: tiny networks (tests/slots/test_architecture.py has the slot's own tests)
    ("architecture", "darts"): ({"primitives": "reduced", "init_channels": 2, "layers": 3}, None),
    ("architecture", "random"): ({"seed": 3, "init_channels": 2, "layers": 3}, None),
    ("architecture", "genotype"): ({"genotype": {"normal": [["sep_conv_3x3", 0], ["skip_connect", 1]] * 4,
                                                 "reduce": [["max_pool_3x3", 0], ["dil_conv_3x3", 1]] * 4},
                                    "init_channels": 2, "layers": 3}, None),
    ("architecture", "sep_conv_cell"): ({"init_channels": 2, "layers": 3}, None),
    ("architecture", "resnet_cell"): ({"init_channels": 2, "layers": 3}, None),
    ("architecture", "conv4"): ({"hidden": 4, "blocks": 2}, None),
}


# slots whose fillers run check_filler in their own suites, which check their own coverage
# (tests/slots/test_augmentation.py, tests/slots/test_data_slot.py)
OWN_SUITES = ("augmentation", "data")


def test_every_registered_filler_has_a_case():
    registered = {(slot, name) for slot, names in FILLERS.items() if slot not in OWN_SUITES for name in names}
    assert registered <= set(CASES), f"add check_filler cases for {sorted(registered - set(CASES))}"


@pytest.mark.parametrize("key", sorted(CASES), ids=lambda k: f"{k[0]}-{k[1]}")
def test_filler_conforms(key):
    slot, name = key
    kwargs, reference = CASES[key]
    check_filler(lambda: build_filler(slot, {"name": name, **kwargs}), reference=reference)


def test_focal_with_gamma_zero_is_cross_entropy():
    check_reference(lambda: build_filler("loss", {"name": "focal", "gamma": 0.0}),
                    lambda o, t: F.cross_entropy(o, t, reduction="none"))


class _TwiceSGD(SGD):
    def update(self, grads, state, params, meta=None):
        return super().update({k: 2 * g for k, g in grads.items()}, state, params, meta)


class _DetachedRates(LearnedRates):
    """Uses its own rates instead of the ones passed in ``meta``: estimators cannot see ω."""

    def update(self, grads, state, params, meta=None):
        return super().update(grads, state, params, meta={})


def test_check_filler_catches_a_wrong_update():
    with pytest.raises(AssertionError, match="vs reference"):
        check_reference(lambda: _TwiceSGD(lr=0.1), lambda ps: torch.optim.SGD(ps, lr=0.1))


def test_check_filler_catches_meta_parameters_that_bypass_meta():
    with pytest.raises(AssertionError, match="meta-gradient"):
        check_meta_gradient(lambda: _DetachedRates(lr=0.1))


def test_config_grammar_reaches_the_learner():
    net = MLP(1, 1, (8,))
    learner = build_learner({"name": "maml", "optimizer": {"name": "adam", "lr": 0.05}, "loss": "mse",
                             "inner_steps": 2}, net, "regression")
    assert type(learner.optimizer).__name__ == "Adam" and learner.optimizer.lr == 0.05
    assert learner.space()["optimizer.lr"] == {"float": [1e-5, 1.0], "log": True}
    with pytest.raises(ConfigError, match="did you mean 'adam'"):
        build_learner({"name": "maml", "optimizer": {"name": "adma"}}, net, "regression")
    with pytest.raises(ConfigError, match="both `inner_lr`"):
        build_learner({"name": "maml", "inner_lr": 0.1, "optimizer": "adam"}, net, "regression")
    with pytest.raises(ConfigError, match="applies to regression"):
        build_learner({"name": "maml", "loss": "mse"}, MLP(1, 3, (8,)), "classification")


def test_meta_parameters_are_named_by_slot_and_learn_selects_groups():
    learner = MAML(MLP(1, 1, (8,)), optimizer=LearnedRates(lr=0.1), task="regression")
    names = set(learner.meta_params())
    assert any(n.startswith("init.") for n in names) and any(n.startswith("optimizer.lrs.") for n in names)
    only_rates = MAML(MLP(1, 1, (8,)), optimizer=LearnedRates(lr=0.1), task="regression", learn=["optimizer"])
    trainable = {k for k, v in only_rates.meta_params().items() if v.requires_grad}
    assert trainable and all(k.startswith("optimizer.") for k in trainable)
    with pytest.raises(ConfigError, match="has no meta-parameters"):
        MAML(MLP(1, 1, (8,)), task="regression", learn=["optimizer"])


def test_register_filler_refuses_non_fillers():
    with pytest.raises(ConfigError, match="Filler subclass"):
        register_filler("bad", dict)


@pytest.mark.parametrize("name", ["adam", "rmsprop"])
def test_second_order_through_adaptive_rules_is_finite_where_a_gradient_is_zero(name):
    """A coordinate with an exactly zero gradient has a zero second moment: sqrt's derivative there
    must not turn the meta-gradient into NaN."""
    net = MLP(1, 1, (8,))
    with torch.no_grad():
        net.features[0].weight[0] = 0.0  # a dead ReLU unit: its gradients are exactly 0
        net.features[0].bias[0] = -1.0
    learner = MAML(net, optimizer={"name": name, "lr": 0.01}, task="regression", inner_steps=2, batching="loop")
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(2, 10, 1, generator=g), torch.randn(2, 10, 1, generator=g)
    learner.meta_backward(TaskBatch(x[:, :5], y[:, :5], x[:, 5:], y[:, 5:]))
    grads = torch.cat([p.grad.flatten() for p in learner.parameters() if p.grad is not None])
    assert torch.isfinite(grads).all()
