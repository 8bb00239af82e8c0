"""Model-based learners (issue 14): MANN and its baselines, Simple CNAPS, MetaNet.

The tricky math is checked against naive float64 references written with loops: the LRUA
memory step, the regularised class covariances and the Mahalanobis head, MetaNet's per-example
head gradients, gradient preprocessing and contrastive loss. Every learner goes through
:func:`autometa.testing.check_learner`; the smoke tier runs each through ``run_experiment``.
"""

import numpy as np
import pytest
import torch

from autometa.data import ArrayDataset
from autometa.errors import AutometaError, CheckpointError, TaskSpecError
from autometa.learners import ProtoNet, build_learner
from autometa.learners._cnaps import covariance, film_conv4_forward, mahalanobis_logits, regularized_class_covariances
from autometa.learners._memory import lru_memory_step
from autometa.learners._metanet import contrastive_loss, head_gradients, preprocess_gradient
from autometa.nets import MLP, Conv4
from autometa.tasks import FewShotClassification, SequenceClassification
from autometa.testing import CHECKS, check_learner
from tests.conftest import needs_data

# ----------------------------------------------------------------------------- fixtures


def sequence_tasks(ways=3, length=9, side=6):
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(6, 1, side, side)).astype(np.float32)
    x = np.concatenate([c + 0.3 * rng.normal(size=(5, 1, side, side)).astype(np.float32) for c in centers])
    data = ArrayDataset(x, np.repeat(np.arange(6), 5))
    return SequenceClassification(data, np.arange(6), ways=ways, length=length, image_size=None)


def few_shot_tasks(ways=3, shots=2, queries=3):
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(8, 1, 16, 16)).astype(np.float32)
    x = np.concatenate([c + 0.3 * rng.normal(size=(6, 1, 16, 16)).astype(np.float32) for c in centers])
    data = ArrayDataset(x, np.repeat(np.arange(8), 6))
    return FewShotClassification(data, np.arange(8), ways=ways, shots=shots, queries=queries)


def make_sequence_learner(name, seed=0, **kwargs):
    torch.manual_seed(seed)
    small = {"mann": {"hidden": 12, "memory_slots": 8, "memory_width": 5, "read_heads": 2}}.get(name, {"hidden": 12})
    return build_learner({"name": name, "ways": 3, **small, **kwargs}, MLP(36, None, hidden=[]), "classification")


# ----------------------------------------------------------------------------- LRUA memory vs a naive reference


def naive_lru_step(memory, usage, read_weights, keys, gates, decay):
    """Santoro et al. 2016, eqs. (4)-(8), one batch element and one slot at a time, float64."""
    batch, slots, _ = memory.shape
    heads = keys.shape[1]
    out = [np.zeros_like(memory), np.zeros_like(usage), np.zeros_like(read_weights), np.zeros_like(keys)]
    for b in range(batch):
        least = np.argsort(usage[b], kind="stable")[:heads]
        lu = np.zeros(slots)
        lu[least] = 1.0
        mem = memory[b].copy()
        for i in range(slots):
            if lu[i]:
                mem[i] = 0.0
        writes = np.zeros((heads, slots))
        for h in range(heads):
            gate = 1.0 / (1.0 + np.exp(-gates[b, h]))
            writes[h] = gate * read_weights[b, h] + (1 - gate) * lu
            for i in range(slots):
                mem[i] = mem[i] + writes[h, i] * keys[b, h]
        reads = np.zeros((heads, slots))
        for h in range(heads):
            sims = np.array([keys[b, h] @ mem[i] / (np.linalg.norm(keys[b, h]) * np.linalg.norm(mem[i]))
                             for i in range(slots)])
            reads[h] = np.exp(sims) / np.exp(sims).sum()
            out[3][b, h] = sum(reads[h, i] * mem[i] for i in range(slots))
        out[0][b], out[2][b] = mem, reads
        out[1][b] = decay * usage[b] + reads.sum(0) + writes.sum(0)
    return out


def test_lru_memory_matches_a_naive_float64_reference_over_several_steps():
    g = torch.Generator().manual_seed(0)
    batch, slots, width, heads = 2, 6, 4, 2
    memory = torch.full((batch, slots, width), 1e-6, dtype=torch.float64)
    usage = torch.zeros(batch, slots, dtype=torch.float64)
    reads_w = torch.zeros(batch, heads, slots, dtype=torch.float64)
    ref = [memory.numpy().copy(), usage.numpy().copy(), reads_w.numpy().copy()]
    for _ in range(7):
        keys = torch.tanh(torch.randn(batch, heads, width, generator=g, dtype=torch.float64))
        gates = torch.randn(batch, heads, generator=g, dtype=torch.float64)
        memory, usage, reads_w, reads = lru_memory_step(memory, usage, reads_w, keys, gates, 0.95)
        *ref, ref_reads = naive_lru_step(*ref, keys.numpy(), gates.numpy(), 0.95)
        for got, want in zip((memory, usage, reads_w, reads), (*ref, ref_reads)):
            np.testing.assert_allclose(got.numpy(), want, rtol=1e-12, atol=1e-12)
    assert (usage > 0).all()  # every slot has been used after 7 steps of 2 heads over 6 slots


# ----------------------------------------------------------------------------- MANN and baselines


@pytest.mark.parametrize("name", ["mann", "sequence_lstm", "sequence_feedforward"])
def test_sequence_learners_pass_the_conformance_suite(name):
    batch = sequence_tasks().sample(2, torch.Generator().manual_seed(0))
    assert check_learner(lambda seed: make_sequence_learner(name, seed), batch) == list(CHECKS)


@pytest.mark.parametrize("name", ["mann", "sequence_lstm"])
def test_a_label_is_shown_one_step_late(name):
    learner = make_sequence_learner(name).double()
    batch = sequence_tasks().sample(1, torch.Generator().manual_seed(0))
    x, y = batch.query_x.double(), batch.query_y
    t = 4
    changed = y.clone()
    changed[0, t] = (y[0, t] + 1) % 3
    with torch.no_grad():
        before, after = learner.sequence_logits(x, y), learner.sequence_logits(x, changed)
    assert torch.equal(before[:, :t + 1], after[:, :t + 1])  # step t is predicted before its label is shown
    assert not torch.allclose(before[:, t + 1], after[:, t + 1])  # and step t + 1 sees it


@pytest.mark.parametrize("name", ["mann", "sequence_lstm", "sequence_feedforward"])
def test_sequence_learners_make_every_tensor_on_the_input_device(name):
    # on the meta device every op runs without data; a tensor made on the CPU (a torch.zeros
    # without device=) would meet the meta tensors and raise, as it would meet CUDA ones on a GPU
    learner = make_sequence_learner(name).to("meta")
    x = torch.empty(2, 9, 1, 6, 6, device="meta")
    labels = torch.empty(2, 9, dtype=torch.long, device="meta")
    assert learner.sequence_logits(x, labels).device.type == "meta"


def test_metanet_and_cnaps_parts_make_every_tensor_on_the_input_device():
    meta = "meta"
    features, labels = torch.empty(5, 4, device=meta), torch.zeros(5, dtype=torch.long, device=meta)
    assert preprocess_gradient(torch.empty(4, 3, device=meta)).device.type == meta
    assert contrastive_loss(features, labels).device.type == meta
    assert head_gradients(features, torch.empty(5, 3, device=meta), labels).device.type == meta
    assert covariance(features).device.type == meta
    chol_ready = torch.eye(4, device=meta).expand(3, 4, 4).contiguous()
    assert mahalanobis_logits(torch.empty(6, 4, device=meta), torch.empty(3, 4, device=meta),
                              chol_ready).device.type == meta
    net = Conv4(1, None, hidden=8).to(meta)
    film = [torch.ones(8, device=meta)] * 4, [torch.zeros(8, device=meta)] * 4
    out = film_conv4_forward(net, dict(net.named_parameters()), torch.empty(2, 1, 28, 28, device=meta), *film)
    assert out.device.type == meta


def test_per_instance_accuracy_matches_a_naive_count():
    learner = make_sequence_learner("sequence_lstm", instances=3)
    labels = torch.tensor([[0, 1, 0, 2, 1, 0, 2, 2, 1]])
    predicted = torch.tensor([[1, 1, 0, 2, 0, 0, 2, 1, 1]])
    logits = torch.nn.functional.one_hot(predicted, 3).float()
    metrics = learner.sequence_metrics(logits, labels)
    # instance k: the steps where a class is shown for the k-th time
    first, second, third = [0, 1, 3], [2, 4, 6], [5, 7, 8]
    for k, steps in enumerate((first, second, third), 1):
        want = np.mean([predicted[0, s] == labels[0, s] for s in steps])
        assert metrics[f"accuracy_{k}"].item() == pytest.approx(want)
    assert metrics["accuracy"].item() == pytest.approx((predicted == labels).float().mean().item())


def test_sequence_learners_refuse_ordinary_episodes_and_labels_beyond_ways():
    learner = make_sequence_learner("mann")
    with pytest.raises(TaskSpecError, match="sequence episodes"):
        learner.evaluate(few_shot_tasks().sample(1, torch.Generator().manual_seed(0)))
    batch = sequence_tasks(ways=3).sample(1, torch.Generator().manual_seed(0))
    two_way = make_sequence_learner("sequence_lstm", ways=2)
    with pytest.raises(TaskSpecError, match="ways=2"):
        two_way.meta_backward(batch)


@pytest.mark.parametrize("bad", [{"usage_decay": 0.0}, {"read_heads": 9}, {"memory_slots": 0}, {"ways": 1.5}])
def test_mann_bad_arguments(bad):
    with pytest.raises(AutometaError, match="Got"):
        build_learner({"name": "mann", "memory_slots": 8, **bad}, MLP(36, None, hidden=[]), "classification")


# ----------------------------------------------------------------------------- Simple CNAPS


def naive_mahalanobis(support, labels, queries, ways, beta=1.0):
    """Simple CNAPS's head, one class and one query at a time, with explicit inverses (float64)."""
    support, queries, labels = support.numpy(), queries.numpy(), labels.numpy()
    d = support.shape[1]
    task = np.cov(support, rowvar=False, ddof=1)
    logits = np.zeros((len(queries), ways))
    for k in range(ways):
        members = support[labels == k]
        n = len(members)
        own = np.cov(members, rowvar=False, ddof=1) if n > 1 else np.zeros((d, d))
        weight = n / (n + 1)
        inverse = np.linalg.inv(weight * own + (1 - weight) * task + beta * np.eye(d))
        mean = members.mean(0)
        for q, x in enumerate(queries):
            logits[q, k] = -(x - mean) @ inverse @ (x - mean)
    return logits


@pytest.mark.parametrize("shots", [1, 2, 4])
def test_mahalanobis_head_matches_a_naive_float64_reference(shots):
    g = torch.Generator().manual_seed(shots)
    ways, d = 3, 5
    labels = torch.arange(ways).repeat_interleave(shots)
    support = torch.randn(ways * shots, d, generator=g, dtype=torch.float64) * torch.linspace(0.5, 3, d,
                                                                                             dtype=torch.float64)
    support = support + 2 * torch.randn(ways, d, generator=g, dtype=torch.float64)[labels]
    queries = torch.randn(7, d, generator=g, dtype=torch.float64)
    means = torch.stack([support[labels == k].mean(0) for k in range(ways)])
    got = mahalanobis_logits(queries, means, regularized_class_covariances(support, labels, ways))
    np.testing.assert_allclose(got.numpy(), naive_mahalanobis(support, labels, queries, ways), rtol=1e-10)


def test_covariance_is_unbiased_and_zero_for_one_example():
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    np.testing.assert_allclose(covariance(x).numpy(), np.cov(x.numpy(), rowvar=False, ddof=1), rtol=1e-12)
    assert torch.equal(covariance(x[:1]), torch.zeros(3, 3, dtype=torch.float64))


def make_cnaps(seed=0, **kwargs):
    torch.manual_seed(seed)
    return build_learner({"name": "simple_cnaps", "encoder_hidden": 4, "film_hidden": 8, **kwargs},
                         Conv4(1, None, hidden=8, image_size=16), "classification")


@pytest.mark.parametrize("kwargs", [{}, {"head": "euclidean"}, {"film": False, "freeze_backbone": False},
                                    {"freeze_backbone": False}])
def test_simple_cnaps_variants_pass_the_conformance_suite(kwargs):
    batch = few_shot_tasks().sample(2, torch.Generator().manual_seed(0))
    assert check_learner(lambda seed: make_cnaps(seed, **kwargs), batch) == list(CHECKS)


def test_frozen_backbone_gets_no_meta_gradient_and_the_film_generators_do():
    learner = make_cnaps()
    learner.meta_backward(few_shot_tasks().sample(2, torch.Generator().manual_seed(0)))
    assert all(p.grad is None for p in learner.model.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in learner.film_generators.parameters())


def test_film_identity_is_the_plain_backbone_and_untrained_cnaps_is_the_no_film_ablation():
    learner = make_cnaps()
    x = torch.randn(5, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    params = dict(learner.model.named_parameters())
    ones = [torch.ones(8)] * 4
    zeros = [torch.zeros(8)] * 4
    torch.testing.assert_close(film_conv4_forward(learner.model, params, x, ones, zeros), learner.model(x))
    shifted = film_conv4_forward(learner.model, params, x, ones, [torch.zeros(8)] * 3 + [torch.full((8,), 0.5)])
    assert not torch.allclose(shifted, learner.model(x))
    batch = few_shot_tasks().sample(2, torch.Generator().manual_seed(0))
    no_film = make_cnaps(film=False)
    torch.testing.assert_close(learner.evaluate(batch), no_film.evaluate(batch))  # FiLM outputs start at identity


def naive_film_forward(model, x, gammas, betas):
    """CNAPs's placement, with the network's own modules: conv, batch norm, FiLM, ReLU, max-pool."""
    blocks = [m for m in model.features if isinstance(m, torch.nn.Sequential)]
    for block, gamma, beta in zip(blocks, gammas, betas):
        x = block[1](block[0](x))
        x = torch.relu(x * gamma.view(1, -1, 1, 1) + beta.view(1, -1, 1, 1))
        x = block[3](x)
    return x.flatten(1)


def test_film_sits_between_batch_norm_and_relu():
    learner = make_cnaps()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 1, 16, 16, generator=g)
    gammas = [1 + 0.5 * torch.randn(8, generator=g) for _ in range(4)]
    betas = [torch.randn(8, generator=g) for _ in range(4)]
    params = dict(learner.model.named_parameters())
    torch.testing.assert_close(film_conv4_forward(learner.model, params, x, gammas, betas),
                               naive_film_forward(learner.model, x, gammas, betas))


def test_no_film_euclidean_head_is_protonet_on_the_same_weights():
    cnaps = make_cnaps(film=False, head="euclidean", freeze_backbone=False)
    proto = ProtoNet(cnaps.model)
    batch = few_shot_tasks().sample(2, torch.Generator().manual_seed(1))
    torch.testing.assert_close(cnaps.evaluate(batch), proto.evaluate(batch))


def test_backbone_is_loaded_from_a_run_checkpoint(tmp_path):
    torch.manual_seed(3)
    trained = Conv4(1, 5, hidden=8, image_size=16)
    path = tmp_path / "last.pt"
    torch.save({"learner": {f"model.{k}": v for k, v in trained.state_dict().items()}, "step": 1}, path)
    learner = make_cnaps(backbone=str(path))
    for name, value in learner.model.state_dict().items():
        assert torch.equal(value, trained.state_dict()[name])
    wrong = tmp_path / "wrong.pt"
    torch.save(Conv4(1, 5, hidden=4, image_size=16).state_dict(), wrong)
    with pytest.raises(CheckpointError, match="right shape"):
        make_cnaps(backbone=str(wrong))
    with pytest.raises(CheckpointError, match="does not exist"):
        make_cnaps(backbone=str(tmp_path / "missing.pt"))


@pytest.mark.parametrize("bad", [{"head": "cosine"}, {"film": "yes"}, {"beta": 0}, {"batching": "vmap"}])
def test_simple_cnaps_bad_arguments(bad):
    with pytest.raises(AutometaError, match="Got|vmap"):
        make_cnaps(**bad)


# ----------------------------------------------------------------------------- MetaNet


def test_head_gradients_match_autograd_per_example():
    g = torch.Generator().manual_seed(0)
    features = torch.randn(4, 6, generator=g, dtype=torch.float64)
    weight = torch.randn(3, 6, generator=g, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(3, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 2, 1, 2])
    logits = features @ weight.T + bias
    got = head_gradients(features, logits, labels)
    for i in range(4):
        loss = torch.nn.functional.cross_entropy((features[i] @ weight.T + bias)[None], labels[i:i + 1])
        (want,) = torch.autograd.grad(loss, weight)
        torch.testing.assert_close(got[i], want)


def test_gradient_preprocessing_and_contrastive_loss_match_naive_formulas():
    grad = torch.tensor([0.5, -2e-3, 1e-6, -1e-5, 0.0], dtype=torch.float64)
    p = 10.0
    want = [(np.log(abs(v)) / p, np.sign(v)) if abs(v) >= np.exp(-p) else (-1.0, np.exp(p) * v) for v in grad.tolist()]
    np.testing.assert_allclose(preprocess_gradient(grad).numpy(), np.array(want), rtol=1e-12)
    reps = 0.4 * torch.randn(5, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    labels = torch.tensor([0, 1, 0, 2, 1])
    terms, inside = [], 0
    for i in range(5):
        for j in range(i + 1, 5):
            d = float(np.linalg.norm(reps[i] - reps[j]))
            terms.append(d ** 2 if labels[i] == labels[j] else max(0.0, 1.0 - d) ** 2)
            inside += bool(labels[i] != labels[j] and d < 1.0)
    assert inside >= 3  # pairs of different classes inside the margin, where the hinge matters
    assert contrastive_loss(reps, labels).item() == pytest.approx(np.mean(terms), rel=1e-9)


def make_metanet(seed=0):
    torch.manual_seed(seed)
    return build_learner({"name": "metanet", "representation_dim": 6, "generator_hidden": 5},
                         Conv4(1, 3, hidden=8, image_size=16), "classification")


def test_metanet_passes_the_conformance_suite_and_uses_its_fast_weights():
    batch = few_shot_tasks().sample(2, torch.Generator().manual_seed(0))
    assert check_learner(make_metanet, batch) == list(CHECKS)
    learner = make_metanet()
    learner.meta_backward(batch)
    for part in ("base_generator", "representation_generator", "representation", "representation_head"):
        grads = [p.grad for p in getattr(learner, part).parameters()]
        assert any(g is not None and g.abs().sum() > 0 for g in grads), part


def test_metanet_refuses_more_ways_than_its_head():
    learner = make_metanet()
    with pytest.raises(TaskSpecError, match="head has 3 outputs"):
        learner.evaluate(few_shot_tasks(ways=4).sample(1, torch.Generator().manual_seed(0)))


# ----------------------------------------------------------------------------- smoke tier: through the run loop


@needs_data()
@pytest.mark.parametrize("config", [
    {"tasks": {"name": "omniglot_sequence", "length": 10}, "model": {"name": "mlp", "hidden": []},
     "learner": {"name": "mann", "hidden": 16, "memory_slots": 8, "memory_width": 4, "read_heads": 2, "instances": 2}},
    {"tasks": {"name": "omniglot", "scheme": "lake", "ways": 5, "shots": 1, "queries": 2},
     "model": {"name": "conv4", "hidden": 8}, "learner": {"name": "simple_cnaps", "encoder_hidden": 4}},
    {"tasks": {"name": "omniglot", "ways": 5, "shots": 1, "queries": 2},
     "model": {"name": "conv4", "hidden": 8}, "learner": {"name": "metanet", "representation_dim": 8}},
])
def test_smoke_run(config, tmp_path):
    from autometa.experiment import run_experiment

    run = {"validate_every": 0, "test_tasks": 4, "eval_batch": 4, "progress": False, "threads": 1}
    results = run_experiment({**config, "outer": {"steps": 2, "meta_batch": 2}, "run": run}, tmp_path / "run")
    assert results["steps"] == 2 and 0 <= results["test"]["accuracy"]["mean"] <= 1
    if config["learner"]["name"] == "mann":
        assert {"accuracy_1", "accuracy_2"} <= set(results["test"])
