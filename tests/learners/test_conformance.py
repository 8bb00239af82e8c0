"""Every registered learner goes through the same checks, :func:`autometa.testing.check_learner`
(seeded determinism, save and reload, meta-gradients reach the meta-parameters, bad input, float64
meta-gradient vs finite differences)."""

import contextlib

import numpy as np
import pytest
import torch

from autometa.data import ArrayDataset
from autometa.errors import AutometaError
from autometa.learners import FOMAML, LEARNERS, MAML, _inputs, build_learner
from autometa.nets import Conv4
from autometa.tasks import FewShotClassification
from autometa.testing import CHECKS, check_learner


def tiny_tasks():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(8, 1, 16, 16)).astype(np.float32)
    x = np.concatenate([c + 0.3 * rng.normal(size=(6, 1, 16, 16)).astype(np.float32) for c in centers])
    data = ArrayDataset(x, np.repeat(np.arange(8), 6))
    return FewShotClassification(data, np.arange(8), ways=3, shots=2, queries=3)


def make(name, seed=0):
    cls = LEARNERS[name]
    torch.manual_seed(seed)
    model = Conv4(1, 3 if getattr(cls, "HEAD", True) else None, hidden=8, image_size=16)
    spec = {"name": name, **({"num_classes": 8} if getattr(cls, "NEEDS_NUM_CLASSES", False) else {})}
    return build_learner(spec, model, "classification")


# learners that need another kind of task (class meta-data instead of support images) have
# conformance checks of their own next to their other tests
SPECIAL_TASKS = {"zeroshot_protonet", "l2o"}  # l2o: optimizee families (tests/optimizers/test_l2o.py)
# online learners on sequence episodes (tests/learners/test_model_based.py)
SPECIAL_TASKS |= {"mann", "sequence_lstm", "sequence_feedforward"}
NAMES = sorted(set(LEARNERS) - SPECIAL_TASKS)


# learners whose meta-gradient is not the exact gradient of the training loss they return
# (first-order approximations, Reptile's difference of weights, iMAML's implicit gradient)
NOT_EXACT = {"fomaml", "reptile", "imaml", "metalearner_lstm"}


@pytest.mark.parametrize("name", NAMES)
def test_check_learner(name):
    ran = check_learner(lambda seed: make(name, seed), tiny_tasks().sample(2, torch.Generator().manual_seed(0)),
                        differentiable=name not in NOT_EXACT)
    assert ("finite_differences" in ran) == (name not in NOT_EXACT and bool(list(make(name).parameters())))


@pytest.mark.parametrize("name", NAMES)
def test_unknown_argument_is_a_clear_error(name):
    with pytest.raises(AutometaError, match="no argument"):
        build_learner({"name": name, "not_an_argument": 1}, Conv4(1, 3, hidden=4, image_size=16), "classification")


@pytest.mark.parametrize("name", ["maml", "fomaml", "anil", "metasgd", "reptile", "imaml"])
@pytest.mark.parametrize("bad", [{"inner_lr": -0.1}, {"inner_steps": 0}, {"inner_lr": "fast"}])
def test_bad_hyperparameters_raise_value_errors(name, bad):
    with pytest.raises(ValueError, match="Got") as info:
        build_learner({"name": name, **bad}, Conv4(1, 3, hidden=4, image_size=16), "classification")
    assert isinstance(info.value, AutometaError)


def test_anil_adapts_only_the_head():
    torch.manual_seed(0)
    learner = make("anil")
    batch = tiny_tasks().sample(1, torch.Generator().manual_seed(0))
    adapted = learner.adapt(batch.support_x[0], batch.support_y[0], training=False)
    params = learner.model_params(learner.meta_params())
    for n in params:
        assert torch.equal(adapted[n], params[n]) != n.startswith("head.")


def test_unknown_learner_and_task_kind():
    with pytest.raises(AutometaError, match="Unknown learner"):
        build_learner({"name": "magic"}, Conv4(1, 3, hidden=4, image_size=16), "classification")
    with pytest.raises(AutometaError, match="task"):
        build_learner({"name": "maml"}, Conv4(1, 3, hidden=4, image_size=16), "ranking")


# ----------------------------------------------------------------------------- check_learner has teeth

def regression_batch():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 8, 2, generator=g)
    y = torch.sin(x.sum(-1, keepdim=True))
    return x[:, :4], y[:, :4], x[:, 4:], y[:, 4:]


def own_net(seed):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.BatchNorm1d(8), torch.nn.Tanh(), torch.nn.Linear(8, 1))


def test_check_learner_passes_a_users_own_network():
    assert check_learner(lambda seed: MAML(own_net(seed), inner_lr=0.1, task="regression"),
                         regression_batch()) == list(CHECKS)


class HalvedMAML(MAML):
    def meta_backward(self, batch):
        metrics = super().meta_backward(batch)
        for p in self.parameters():
            p.grad = p.grad / 2
        return metrics


class NoisyMAML(MAML):
    def predict(self, params, x):  # draws from the global RNG: not a function of seed and tasks
        return super().predict(params, x) + 1e-3 * torch.rand(len(x), 1)


class ForgetfulMAML(MAML):
    """Keeps a scale outside its state dict, so a reloaded copy evaluates differently."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.scale = 1.0

    def predict(self, params, x):
        return self.scale * super().predict(params, x)

    def meta_backward(self, batch):
        self.scale = 1.5
        return super().meta_backward(batch)


@pytest.mark.parametrize("cls, match", [
    (HalvedMAML, "central difference"),
    (NoisyMAML, "not deterministic"),
    (ForgetfulMAML, "state dict"),
])
def test_check_learner_catches_a_broken_learner(cls, match):
    with pytest.raises(AssertionError, match=match):
        check_learner(lambda seed: cls(own_net(seed), inner_lr=0.1, task="regression"), regression_batch())


def test_check_learner_catches_a_learner_that_is_not_exact_unless_told():
    make = lambda seed: FOMAML(own_net(seed), inner_lr=0.1, task="regression")
    with pytest.raises(AssertionError, match="differentiable=False"):
        check_learner(make, regression_batch())
    assert "finite_differences" not in check_learner(make, regression_batch(), differentiable=False)


def test_check_learner_catches_changed_buffers_and_raw_errors(monkeypatch):
    make = lambda seed: MAML(own_net(seed), inner_lr=0.1, task="regression", batching="loop")
    with monkeypatch.context() as patch:  # the protection of the network's buffers removed
        patch.setattr(_inputs, "no_buffer_updates", lambda module: contextlib.nullcontext())
        with pytest.raises(AssertionError, match="changed the network's buffers"):
            check_learner(make, regression_batch())
    with monkeypatch.context() as patch:  # the batch checks removed: torch's raw errors come through
        patch.setattr(_inputs, "check_batch", lambda learner, batch: batch)
        with pytest.raises(AssertionError, match="should raise an autometa error"):
            check_learner(make, regression_batch())


def test_check_learner_refuses_what_is_not_a_learner_factory():
    with pytest.raises(AutometaError, match="seed -> learner"):
        check_learner(MAML(own_net(0)), regression_batch())
    with pytest.raises(AutometaError, match="must return a Learner"):
        check_learner(lambda seed: own_net(seed), regression_batch())
