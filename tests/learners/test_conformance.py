"""Every registered learner goes through the same checks (seeded determinism, save and reload,
meta-gradients reach the meta-parameters, bad input)."""

import io

import numpy as np
import pytest
import torch

from autometa.data import ArrayDataset
from autometa.errors import AutometaError
from autometa.learners import LEARNERS, build_learner
from autometa.nets import Conv4
from autometa.tasks import FewShotClassification


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
NAMES = sorted(set(LEARNERS) - SPECIAL_TASKS)


@pytest.mark.parametrize("name", NAMES)
def test_meta_backward_is_deterministic_and_reaches_meta_params(name):
    batch = tiny_tasks().sample(2, torch.Generator().manual_seed(0))
    if not list(make(name).parameters()):
        pytest.skip(f"{name} has nothing to meta-learn (a hand-crafted rule)")
    grads = []
    for _ in range(2):
        learner = make(name)
        metrics = learner.meta_backward(batch)
        assert np.isfinite(metrics["loss"]) and 0 <= metrics.get("accuracy", 0) <= 1
        grads.append({n: p.grad.clone() for n, p in learner.named_parameters() if p.grad is not None})
        assert grads[-1], f"{name}: no meta-parameter received a gradient"
        assert any(g.abs().sum() > 0 for g in grads[-1].values())
    assert grads[0].keys() == grads[1].keys()
    assert all(torch.equal(grads[0][k], grads[1][k]) for k in grads[0])


@pytest.mark.parametrize("name", NAMES)
def test_save_and_reload_gives_identical_evaluation(name):
    batch = tiny_tasks().sample(3, torch.Generator().manual_seed(1))
    learner = make(name, seed=0)
    if list(learner.parameters()):
        learner.meta_backward(batch)
    with torch.no_grad():
        for p in learner.parameters():
            p.add_(0.01 * torch.randn_like(p))
        # the learner must actually use its parameters: perturbing them changes the evaluation
        if list(learner.parameters()):
            shifted = {n: p + 0.5 for n, p in learner.state_dict().items()}
            probe = make(name, seed=0)
            probe.load_state_dict(shifted)
            assert not torch.equal(probe.evaluate(batch)["loss"], learner.evaluate(batch)["loss"])
    buffer = io.BytesIO()
    torch.save(learner.state_dict(), buffer)
    buffer.seek(0)
    other = make(name, seed=1)
    other.load_state_dict(torch.load(buffer, weights_only=True))
    a, b = learner.evaluate(batch), other.evaluate(batch)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert a["accuracy"].shape == (3,)


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
