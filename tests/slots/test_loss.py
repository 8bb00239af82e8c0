"""The loss slot: hand-crafted losses against plain torch, the learned loss's meta-gradient in float64,
the slot inside MAML, per-task random initializations and the supervised task family."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from autometa.data import ArrayDataset
from autometa.errors import AutometaError, ConfigError, TaskSpecError
from autometa.learners import MAML
from autometa.learners._gradient import seeded_init
from autometa.nets import MLP
from autometa.slots import build_filler
from autometa.slots.loss import CrossEntropy, FocalLoss, LabelSmoothing, LearnedLoss
from autometa.tasks import SupervisedClassification, TaskBatch, make_tasks, split_examples


def logits_and_labels(n=12, classes=4, seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    return 3 * torch.randn(n, classes, generator=gen, dtype=dtype), torch.randint(classes, (n,), generator=gen)


# ---------------------------------------------------------------- hand-crafted losses vs plain torch


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.25])
def test_label_smoothing_equals_torch_and_the_formula(smoothing):
    outputs, targets = logits_and_labels()
    per_sample = LabelSmoothing(smoothing).loss(outputs, targets)
    torch.testing.assert_close(per_sample, F.cross_entropy(outputs, targets, reduction="none",
                                                           label_smoothing=smoothing))
    # the definition: cross-entropy against (1 - s) one_hot + s / K
    log_p = torch.log_softmax(outputs, -1)
    soft = (1 - smoothing) * F.one_hot(targets, 4).double() + smoothing / 4
    torch.testing.assert_close(per_sample, -(soft * log_p).sum(-1))
    torch.testing.assert_close(LabelSmoothing(smoothing).mean_loss(outputs, targets), per_sample.mean())


@pytest.mark.parametrize("gamma", [0.5, 2.0, 5.0])
def test_focal_loss_equals_the_direct_formula(gamma):
    outputs, targets = logits_and_labels()
    p = torch.softmax(outputs, -1)[torch.arange(len(targets)), targets]
    torch.testing.assert_close(FocalLoss(gamma).loss(outputs, targets), -((1 - p) ** gamma) * torch.log(p))


def test_focal_loss_with_gamma_zero_is_cross_entropy_and_gradients_agree():
    outputs, targets = logits_and_labels()
    outputs.requires_grad_(True)
    focal = FocalLoss(0.0).mean_loss(outputs, targets)
    ce = CrossEntropy().mean_loss(outputs, targets)
    torch.testing.assert_close(focal, F.cross_entropy(outputs, targets))
    torch.testing.assert_close(*(torch.autograd.grad(v, outputs)[0] for v in (focal, ce)))


def test_hand_crafted_losses_reject_bad_hyperparameters():
    for bad in (-0.1, 1.0, "x", True):
        with pytest.raises(ConfigError, match="smoothing"):
            LabelSmoothing(bad)
    with pytest.raises(ConfigError, match="gamma"):
        FocalLoss(-1.0)


# ---------------------------------------------------------------- the learned loss


def test_learned_loss_is_registered_non_negative_and_seeded():
    loss = build_filler("loss", {"name": "learned", "hidden": [8, 8]})
    assert isinstance(loss, LearnedLoss) and loss.config() == {"name": "learned", "hidden": [8, 8],
                                                                "activation": "softplus", "seed": 0}
    assert sorted(loss.meta_params()) == sorted(f"net.{i}.{p}" for i in (0, 2, 4) for p in ("weight", "bias"))
    outputs, targets = logits_and_labels(dtype=torch.float32)
    values = loss.loss(outputs, targets)
    assert values.shape == (12,) and bool((values >= 0).all())
    regression = loss.loss(torch.randn(5, 3), torch.randn(5, 3))
    assert regression.shape == (5,) and bool((regression >= 0).all())
    # the seed, not torch's global generator, makes the weights
    state = torch.random.get_rng_state()
    again = LearnedLoss(hidden=[8, 8])
    assert torch.equal(torch.random.get_rng_state(), state)
    for k, v in loss.state_dict().items():
        assert torch.equal(v, again.state_dict()[k])
    assert not torch.equal(LearnedLoss(hidden=[8, 8], seed=1).net[0].weight, again.net[0].weight)


def test_learned_loss_reads_its_weights_from_meta():
    loss = LearnedLoss(hidden=[4])
    outputs, targets = logits_and_labels(dtype=torch.float32)
    zero = {k: torch.zeros_like(v) for k, v in loss.meta_params().items()}
    # all weights zero: h = 0 everywhere, so every sample's loss is softplus(0) = log 2
    torch.testing.assert_close(loss.loss(outputs, targets, zero), torch.full((12,), np.log(2.0)))
    assert not torch.allclose(loss.loss(outputs, targets), torch.full((12,), np.log(2.0)))


def test_learned_loss_is_label_permutation_equivariant():
    """Few-shot labels are arbitrary: renaming the classes must not change the loss."""
    loss = LearnedLoss(hidden=[8])
    outputs, targets = logits_and_labels(dtype=torch.float32)
    perm = torch.tensor([2, 0, 3, 1])
    renamed = torch.empty_like(outputs)
    renamed[:, perm] = outputs
    torch.testing.assert_close(loss.loss(renamed, perm[targets]), loss.loss(outputs, targets))


def test_learned_loss_rejects_bad_arguments():
    for kwargs, name in (({"hidden": [0]}, "hidden"), ({"hidden": 50}, "hidden"),
                         ({"activation": "gelu"}, "activation"), ({"seed": 1.5}, "seed")):
        with pytest.raises(ConfigError, match=name) as info:
            LearnedLoss(**kwargs)
        assert isinstance(info.value, (AutometaError, ValueError))
    with pytest.raises(ConfigError, match="did you mean"):
        build_filler("loss", {"name": "learned", "hiden": [4]})


def few_shot_batch(kind, tasks=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    if kind == "classification":
        x = torch.randn(tasks, 12, 4, generator=gen, dtype=torch.float64)
        y = torch.randint(3, (tasks, 12), generator=gen)
    else:
        x = torch.randn(tasks, 12, 4, generator=gen, dtype=torch.float64)
        y = torch.randn(tasks, 12, 3, generator=gen, dtype=torch.float64)
    return TaskBatch(x[:, :6], y[:, :6], x[:, 6:], y[:, 6:])


def hand_written_outer_loss(learner, batch, weights, inner_lr, steps, kind):
    """The mean query loss after ``steps`` SGD steps on the learned loss, written out by hand."""
    w1, b1, w2, b2 = (weights[k] for k in ("net.0.weight", "net.0.bias", "net.2.weight", "net.2.bias"))
    total = 0.0
    for i in range(len(batch)):
        params = {k: v.detach().requires_grad_(True) for k, v in learner.model.named_parameters()}
        for _ in range(steps):
            out = torch.func.functional_call(learner.model, params, (batch.support_x[i],))
            if kind == "classification":
                pred, target = torch.log_softmax(out, -1), F.one_hot(batch.support_y[i], 3).double()
            else:
                pred, target = out, batch.support_y[i]
            pairs = torch.stack([pred, target], -1)
            h = F.softplus(pairs @ w1.T + b1) @ w2.T + b2
            inner = F.softplus(h.squeeze(-1)).mean(-1).mean()
            grads = torch.autograd.grad(inner, list(params.values()), create_graph=True)
            params = {k: v - inner_lr * g for (k, v), g in zip(params.items(), grads)}
        out = torch.func.functional_call(learner.model, params, (batch.query_x[i],))
        target = batch.query_y[i]
        query = F.cross_entropy(out, target) if kind == "classification" else F.mse_loss(out, target)
        total = total + query
    return total / len(batch)


@pytest.mark.parametrize("kind", ["classification", "regression"])
def test_learned_loss_meta_gradient_equals_finite_differences_and_a_hand_written_unroll(kind):
    torch.manual_seed(0)
    model = MLP(4, 3, (5,)).double()
    learner = MAML(model, inner_lr=0.3, inner_steps=2, loss={"name": "learned", "hidden": [4]}, learn=["loss"],
                   task=kind, batching="loop").double()
    batch = few_shot_batch(kind)
    learner.meta_backward(batch)
    weights = dict(learner.loss.meta_params())
    assert weights and all(not p.requires_grad for p in learner.model.parameters())
    assert all(p.grad is None for p in learner.model.parameters())  # the init is frozen
    analytic = {k: v.grad.clone() for k, v in weights.items()}
    assert all(g.abs().sum() > 0 for g in analytic.values())

    hand = hand_written_outer_loss(learner, batch, weights, 0.3, 2, kind)
    by_hand = dict(zip(weights, torch.autograd.grad(hand, list(weights.values()))))
    for k in weights:
        torch.testing.assert_close(analytic[k], by_hand[k], rtol=1e-9, atol=1e-12)

    def outer(k, index, delta):
        with torch.no_grad():
            weights[k].view(-1)[index] += delta
            value = learner.evaluate(batch)["loss"].mean().item()
            weights[k].view(-1)[index] -= delta
        return value

    h = 1e-6
    for k, v in weights.items():
        for index in range(v.numel()):
            numeric = (outer(k, index, h) - outer(k, index, -h)) / (2 * h)
            assert abs(numeric - analytic[k].view(-1)[index].item()) < 1e-7 + 1e-5 * abs(numeric), (k, index)


# ---------------------------------------------------------------- the slot inside MAML


@pytest.mark.parametrize("loss", [LabelSmoothing(0.2), FocalLoss(2.0), CrossEntropy()])
def test_maml_inner_loop_minimises_the_filler_and_the_query_loss_is_the_tasks(loss):
    torch.manual_seed(0)
    learner = MAML(MLP(4, 3, (5,)).double(), inner_lr=0.5, inner_steps=1, loss=loss, batching="loop").double()
    batch = few_shot_batch("classification", tasks=1)
    adapted = learner.adapt(batch.support_x[0], batch.support_y[0], steps=1)
    params = {k: v.detach().requires_grad_(True) for k, v in learner.model.named_parameters()}
    out = torch.func.functional_call(learner.model, params, (batch.support_x[0],))
    if isinstance(loss, LabelSmoothing):
        inner = F.cross_entropy(out, batch.support_y[0], label_smoothing=0.2)
    elif isinstance(loss, FocalLoss):
        p = torch.softmax(out, -1)[torch.arange(6), batch.support_y[0]]
        inner = (-((1 - p) ** 2) * p.log()).mean()
    else:
        inner = F.cross_entropy(out, batch.support_y[0])
    grads = torch.autograd.grad(inner, list(params.values()))
    expected = {k: v - 0.5 * g for (k, v), g in zip(params.items(), grads)}
    for k in expected:
        torch.testing.assert_close(adapted[k], expected[k])
    query = F.cross_entropy(torch.func.functional_call(learner.model, expected, (batch.query_x[0],)),
                            batch.query_y[0])
    torch.testing.assert_close(learner.evaluate(batch)["loss"][0], query.detach())


def test_maml_rejects_a_classification_loss_on_regression_tasks():
    with pytest.raises(ConfigError, match="mse"):
        MAML(MLP(1, 1, (4,)), loss="focal", task="regression")


# ---------------------------------------------------------------- per-task random initializations


def test_seeded_init_follows_torch_defaults_and_its_seed():
    model = MLP(64, 5, (32,))
    like = dict(model.named_parameters())
    a, b, c = seeded_init(like, 1), seeded_init(like, 1), seeded_init(like, 2)
    for k in like:
        assert torch.equal(a[k], b[k]) and a[k].shape == like[k].shape and not a[k].requires_grad
        assert not torch.equal(a[k], c[k])
    # nn.Linear's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for the weight and its bias
    for name, fan_in in (("features.0", 64), ("head", 32)):
        for part in ("weight", "bias"):
            values = a[f"{name}.{part}"]
            assert values.abs().max() <= fan_in ** -0.5 and values.abs().max() > 0.8 * fan_in ** -0.5
    norm = seeded_init({"bn.weight": torch.zeros(3), "bn.bias": torch.ones(3)}, 0)
    assert torch.equal(norm["bn.weight"], torch.ones(3)) and torch.equal(norm["bn.bias"], torch.zeros(3))


def test_reinit_gives_each_task_its_own_initialization_whatever_the_batch():
    torch.manual_seed(0)
    learner = MAML(MLP(4, 3, (5,)), inner_lr=0.1, inner_steps=1, reinit=True)
    assert learner.learn == () and not any(p.requires_grad for p in learner.parameters())
    batch = few_shot_batch("classification", tasks=3)
    batch = TaskBatch(*(t.float() if t.is_floating_point() else t for t in batch.tensors))
    meta = learner.meta_params()
    inits = [learner.problem(*(t[i] for t in batch.tensors)).init(meta) for i in range(3)]
    again = learner.problem(*(t[1] for t in batch.tensors)).init(meta)
    own = dict(learner.model.named_parameters())
    for k in own:
        assert torch.equal(inits[1][k], again[k])  # a pure function of the task
        assert not torch.equal(inits[0][k], inits[1][k]) and not torch.equal(inits[0][k], own[k])
    full = learner.evaluate(batch)["loss"]
    alone = learner.evaluate(batch[1:2])["loss"]
    torch.testing.assert_close(full[1:2], alone)


def test_reinit_refuses_to_learn_the_init_and_vmap():
    with pytest.raises(ConfigError, match="reinit"):
        MAML(MLP(4, 3, (5,)), reinit=True, learn=["init"])
    with pytest.raises(ConfigError, match="vmap"):
        MAML(MLP(4, 3, (5,)), reinit=True, batching="vmap")
    with pytest.raises(ConfigError, match="reinit"):
        MAML(MLP(4, 3, (5,)), reinit="yes")


def test_reinit_meta_gradient_reaches_only_the_learned_loss():
    torch.manual_seed(0)
    learner = MAML(MLP(4, 3, (5,)), inner_lr=0.3, inner_steps=2, loss={"name": "learned", "hidden": [4]},
                   reinit=True)
    assert learner.learn == ("loss",)
    batch = few_shot_batch("classification")
    learner.meta_backward(TaskBatch(*(t.float() if t.is_floating_point() else t for t in batch.tensors)))
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in learner.loss.parameters())
    assert all(p.grad is None for p in learner.model.parameters())


# ---------------------------------------------------------------- the supervised task family


def toy_dataset(classes=4, per_class=30):
    x = torch.arange(classes * per_class, dtype=torch.float32).view(-1, 1, 1, 1).numpy()
    y = np.repeat(np.arange(classes), per_class)
    return ArrayDataset(x, y, "toy", [str(c) for c in range(classes)], {}, {})


def test_split_examples_partitions_every_class():
    y = np.repeat(np.arange(3), 20)
    parts = split_examples(y, {"train": 0.5, "val": 0.25, "test": 0.25}, seed=0)
    assert sum(len(p) for p in parts.values()) == 60
    assert len(set(parts["train"]) | set(parts["val"]) | set(parts["test"])) == 60
    for p in parts.values():
        assert np.bincount(y[p], minlength=3).min() > 0


def test_supervised_tasks_hold_distinct_examples_of_their_classes():
    data = toy_dataset()
    tasks = SupervisedClassification(data, np.arange(120), ways=3, train_size=20, test_size=40)
    batch = tasks.sample(5, torch.Generator().manual_seed(0))
    assert batch.support_x.shape == (5, 20, 1, 1, 1) and batch.query_y.shape == (5, 40)
    for i in range(5):
        ids = torch.cat([batch.support_x[i], batch.query_x[i]]).flatten().long()
        labels = torch.cat([batch.support_y[i], batch.query_y[i]])
        assert len(set(ids.tolist())) == 60  # training and held-out examples never coincide
        # an example's task label is the position of its dataset class among the task's classes
        torch.testing.assert_close(batch.info["classes"][i][labels], torch.as_tensor(data.y)[ids])
    again = tasks.sample(5, torch.Generator().manual_seed(0))
    assert torch.equal(again.support_x, batch.support_x)


def test_supervised_splits_never_share_examples_and_errors_say_what_to_do():
    spec = {"name": "supervised", "dataset": "digits", "ways": 5, "train_size": 20, "test_size": 20}
    seen = {}
    for split in ("train", "val", "test"):
        tasks = make_tasks(spec, split)
        seen[split] = {int(i) for row, n in zip(tasks._table, tasks._counts) for i in row[:n]}
    assert not seen["train"] & seen["test"] and not seen["train"] & seen["val"] and not seen["val"] & seen["test"]
    assert len(seen["train"]) + len(seen["val"]) + len(seen["test"]) == 1797
    with pytest.raises(TaskSpecError, match="smaller sizes"):
        SupervisedClassification(toy_dataset(), np.arange(120), ways=3, train_size=50, test_size=50)
    with pytest.raises(TaskSpecError, match="smaller `ways`"):
        SupervisedClassification(toy_dataset(), np.arange(120), ways=5)
    with pytest.raises(TaskSpecError, match="validate_every"):
        make_tasks({**spec, "examples": {"train": 0.8, "test": 0.2}}, "val")
    with pytest.raises(TaskSpecError, match="fractions"):
        make_tasks({**spec, "examples": {"train": 0.8, "test": 0.4}}, "train")


def test_supervised_config_keys_are_checked_with_suggestions():
    with pytest.raises(ConfigError, match="did you mean 'train_size'"):
        make_tasks({"name": "supervised", "train_sise": 5}, "train")
    with pytest.raises(ConfigError, match="supervised family must be an .npz path or one of"):
        make_tasks({"name": "supervised", "dataset": "digit"}, "train")
