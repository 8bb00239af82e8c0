"""Metric learners: hand-computed distances and prototypes, label leaks, conformance checks."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from autometa.data import ArrayDataset
from autometa.errors import AutometaError, ConfigError, TaskSpecError
from autometa.learners import (
    LEARNERS,
    GraphNet,
    MatchingNet,
    MetricLearner,
    ProtoNet,
    RelationNet,
    SiameseNet,
    ZeroShotProtoNet,
    build_learner,
)
from autometa.learners._metric import conv_feature_maps
from autometa.nets import MLP, Conv4, params_of
from autometa.tasks import SEVEN_SEGMENT, ClassAttributeTasks, TaskBatch, seven_segment_vectors

IMAGE_LEARNERS = [
    ("protonet", {}), ("protonet", {"distance": "cosine"}), ("matchingnet", {}),
    ("matchingnet", {"fce": True, "processing_steps": 2}), ("relationnet", {}), ("siamese", {}),
    ("graphnet", {"max_ways": 4, "growth": 8, "adjacency_hidden": 8}),
]
IDS = [name + ("-" + "-".join(map(str, kw.values())) if kw else "") for name, kw in IMAGE_LEARNERS]


def episode(tasks=2, ways=3, shots=2, queries=2, shape=(1, 28, 28), seed=0) -> TaskBatch:
    """Random inputs with class-major labels, as FewShotClassification produces them."""
    gen = torch.Generator().manual_seed(seed)
    sy = torch.arange(ways).repeat_interleave(shots).expand(tasks, -1).clone()
    qy = torch.arange(ways).repeat_interleave(queries).expand(tasks, -1).clone()
    return TaskBatch(torch.rand(tasks, ways * shots, *shape, generator=gen), sy,
                     torch.rand(tasks, ways * queries, *shape, generator=gen), qy)


def make(name, kwargs, seed=0, model=None):
    torch.manual_seed(seed)
    model = model if model is not None else Conv4(out_features=None, hidden=8)
    return build_learner({"name": name, **kwargs}, model, "classification")


def identity_embedding(dim):
    """An MLP with no layers: the embedding of x is x itself, so distances can be checked by hand."""
    return MLP(dim, None, hidden=())


# ----------------------------------------------------------------------------- hand-computed results

def test_protonet_logits_are_negative_squared_distances_to_class_means():
    torch.manual_seed(1)
    support = torch.randn(6, 4, dtype=torch.float64)
    support_y = torch.tensor([2, 0, 1, 0, 2, 1])  # any order: prototypes follow labels, not positions
    queries = torch.randn(5, 4, dtype=torch.float64)
    learner = ProtoNet(identity_embedding(4)).double()
    logits = learner.predict(support, support_y, queries)
    for c in range(3):
        prototype = support[support_y == c].mean(0)
        expected = -((queries - prototype) ** 2).sum(-1)
        torch.testing.assert_close(logits[:, c], expected)


def test_protonet_cosine_and_temperature():
    torch.manual_seed(2)
    support, queries = torch.randn(4, 3, dtype=torch.float64), torch.randn(3, 3, dtype=torch.float64)
    support_y = torch.tensor([0, 0, 1, 1])
    learner = ProtoNet(identity_embedding(3), distance="cosine", temperature=0.5).double()
    logits = learner.predict(support, support_y, queries)
    for c in range(2):
        prototype = support[support_y == c].mean(0)
        expected = -(1 - F.cosine_similarity(queries, prototype[None], dim=-1)) / 0.5
        torch.testing.assert_close(logits[:, c], expected)


def test_matchingnet_is_attention_over_support_labels():
    torch.manual_seed(3)
    support, queries = torch.randn(6, 4, dtype=torch.float64), torch.randn(2, 4, dtype=torch.float64)
    support_y = torch.tensor([0, 0, 1, 1, 2, 2])
    learner = MatchingNet(identity_embedding(4)).double()
    log_probs = learner.predict(support, support_y, queries)
    cos = F.cosine_similarity(queries[:, None], support[None], dim=-1)
    attention = torch.softmax(cos, dim=-1)
    expected = torch.stack([attention[:, support_y == c].sum(-1) for c in range(3)], -1)
    torch.testing.assert_close(log_probs.exp(), expected)


def test_siamese_averages_pair_similarity_per_class():
    torch.manual_seed(4)
    support, queries = torch.randn(4, 3, dtype=torch.float64), torch.randn(2, 3, dtype=torch.float64)
    support_y = torch.tensor([1, 0, 1, 0])
    learner = SiameseNet(identity_embedding(3)).double()
    scores = learner.predict(support, support_y, queries)
    w, b = learner.similarity.weight[0], learner.similarity.bias
    pair = torch.sigmoid((queries[:, None] - support[None]).abs() @ w + b)
    expected = torch.stack([pair[:, support_y == c].mean(-1) for c in range(2)], -1)
    torch.testing.assert_close(scores, expected.detach())


def test_siamese_pair_loss_is_balanced_binary_cross_entropy():
    torch.manual_seed(5)
    batch = episode(tasks=1, ways=3, shots=1, queries=2, shape=(3,))
    learner = SiameseNet(identity_embedding(3), positive_weight=0.5).double()
    sx, sy, qx, qy = (t[0] for t in batch.tensors)
    sx, qx = sx.double(), qx.double()
    loss, _ = learner.task_loss(learner.meta_params(), sx, sy, qx, qy, training=False)
    logits = learner.similarity((qx[:, None] - sx[None]).abs()).squeeze(-1)
    same = (qy[:, None] == sy[None]).double()
    bce = F.binary_cross_entropy_with_logits(logits, same, reduction="none")
    expected = 0.5 * bce[same == 1].mean() + 0.5 * bce[same == 0].mean()
    torch.testing.assert_close(loss, expected)


def test_relationnet_feature_maps_are_conv4_blocks_without_last_pools():
    torch.manual_seed(6)
    model = Conv4(out_features=None, hidden=8)
    x = torch.rand(3, 1, 28, 28)
    maps = conv_feature_maps(model, params_of(model), x, unpooled_blocks=2)
    assert maps.shape == (3, 8, 7, 7)
    # with every pool kept it must be exactly Conv4's own (flattened) features
    full = conv_feature_maps(model, params_of(model), x, unpooled_blocks=0)
    torch.testing.assert_close(full.flatten(1), model(x))


def test_relationnet_mse_on_one_hot_targets():
    torch.manual_seed(7)
    learner = RelationNet(Conv4(out_features=None, hidden=8))
    batch = episode(tasks=1)
    sx, sy, qx, qy = (t[0] for t in batch.tensors)
    loss, _ = learner.task_loss(learner.meta_params(), sx, sy, qx, qy, training=False)
    scores = learner.predict(sx, sy, qx)
    assert ((scores >= 0) & (scores <= 1)).all()
    torch.testing.assert_close(loss, F.mse_loss(scores, F.one_hot(qy, 3).float()))


def test_zero_shot_prototypes_come_from_class_vectors():
    torch.manual_seed(8)
    learner = ZeroShotProtoNet(identity_embedding(4), class_dim=7, class_hidden=5).double()
    vectors = torch.tensor(seven_segment_vectors()[[1, 4, 7]], dtype=torch.float64)
    queries = torch.randn(4, 4, dtype=torch.float64)
    logits = learner.predict(vectors, torch.arange(3), queries)
    prototypes = learner.class_encoder(vectors)
    prototypes = prototypes / prototypes.norm(dim=-1, keepdim=True)
    expected = -((queries[:, None] - prototypes[None]) ** 2).sum(-1)
    torch.testing.assert_close(logits, expected.detach())


# ----------------------------------------------------------------------------- no label leaks

@pytest.mark.parametrize("name,kwargs", IMAGE_LEARNERS, ids=IDS)
def test_predictions_depend_on_support_labels_not_query_labels(name, kwargs):
    learner = make(name, kwargs)
    batch = episode(tasks=1, ways=3, shots=2, queries=2)
    sx, sy, qx, qy = (t[0] for t in batch.tensors)
    scores = learner.predict(sx, sy, qx)
    # renaming the classes of the support set renames the score columns the same way
    rename = torch.tensor([2, 0, 1])
    renamed = learner.predict(sx, rename[sy], qx)
    if name == "graphnet":
        # its output layer has one weight row per label position, so it is equivariant only as
        # far as training (episodes relabelled at random) made it; the labels must still matter
        assert not torch.allclose(renamed[:, rename], scores)
    else:
        torch.testing.assert_close(renamed[:, rename], scores)
    # the query labels never reach the predictions: accuracy under shuffled labels matches
    shuffled = qy[torch.randperm(len(qy), generator=torch.Generator().manual_seed(0))]
    metrics = learner.evaluate(TaskBatch(sx[None], sy[None], qx[None], shuffled[None]))
    expected = (scores.argmax(-1) == shuffled).float().mean()
    torch.testing.assert_close(metrics["accuracy"][0], expected)


@pytest.mark.parametrize("name,kwargs", IMAGE_LEARNERS, ids=IDS)
def test_query_order_only_permutes_predictions(name, kwargs):
    learner = make(name, kwargs)
    sx, sy, qx, _ = (t[0] for t in episode(tasks=1).tensors)
    order = torch.tensor([5, 3, 0, 1, 4, 2])
    torch.testing.assert_close(learner.predict(sx, sy, qx[order]), learner.predict(sx, sy, qx)[order],
                               atol=1e-5, rtol=1e-5)


def test_graphnet_queries_do_not_see_each_other():
    torch.manual_seed(9)
    learner = GraphNet(MLP(5, None, hidden=(6,)), max_ways=3, growth=4, adjacency_hidden=4, query_chunk=2)
    sx, sy, qx, _ = (t[0] for t in episode(tasks=1, shape=(5,)).tensors)
    changed = qx.clone()
    changed[1:] = torch.rand_like(changed[1:])
    torch.testing.assert_close(learner.predict(sx, sy, changed)[0], learner.predict(sx, sy, qx)[0])


# ----------------------------------------------------------------------------- conformance

@pytest.mark.parametrize("name,kwargs", IMAGE_LEARNERS, ids=IDS)
def test_seeded_determinism_and_gradients_reach_the_embedding(name, kwargs):
    batch = episode()
    grads = []
    for _ in range(2):
        learner = make(name, kwargs, seed=3)
        metrics = learner.meta_backward(batch)
        assert set(metrics) == {"loss", "accuracy"}
        grads.append({n: p.grad.clone() for n, p in learner.named_parameters()})
    for n in grads[0]:
        torch.testing.assert_close(grads[0][n], grads[1][n], atol=0, rtol=0)
    embedding = [g for n, g in grads[0].items() if n.startswith("model.") and n.endswith("0.weight")]
    assert embedding and all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in embedding)
    others = [g for n, g in grads[0].items() if not n.startswith("model.")]
    assert all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in others)


@pytest.mark.parametrize("name,kwargs", IMAGE_LEARNERS, ids=IDS)
def test_state_dict_round_trip_gives_identical_evaluation(name, kwargs, tmp_path):
    batch = episode(seed=4)
    trained = make(name, kwargs, seed=0)
    torch.optim.SGD(trained.parameters(), lr=0.1).zero_grad()
    trained.meta_backward(batch)
    with torch.no_grad():
        for p in trained.parameters():
            p -= 0.1 * p.grad
    torch.save(trained.state_dict(), tmp_path / "learner.pt")
    fresh = make(name, kwargs, seed=1)
    fresh.load_state_dict(torch.load(tmp_path / "learner.pt", weights_only=True))
    a, b = trained.evaluate(batch), fresh.evaluate(batch)
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=0, rtol=0)


@pytest.mark.parametrize("name,kwargs", IMAGE_LEARNERS, ids=IDS)
def test_loop_and_vmap_batching_agree(name, kwargs):
    batch = episode(tasks=2, ways=3, shots=2, queries=1, shape=(6,))
    looped = make(name, kwargs, model=MLP(6, None, hidden=(8,)))
    vmapped = make(name, {**kwargs, "batching": "vmap"}, model=MLP(6, None, hidden=(8,)))
    vmapped.load_state_dict(looped.state_dict())
    a, b = looped.evaluate(batch), vmapped.evaluate(batch)
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-5)


def test_relationnet_conv_vmap_matches_loop_despite_padding_classes():
    batch = episode(tasks=2, ways=2, shots=2, queries=1, shape=(1, 12, 12))
    looped = make("relationnet", {})
    vmapped = make("relationnet", {"batching": "vmap"})
    vmapped.load_state_dict(looped.state_dict())
    a, b = looped.evaluate(batch), vmapped.evaluate(batch)
    torch.testing.assert_close(a["loss"], b["loss"], atol=1e-5, rtol=1e-5)


def test_protonet_trains_with_more_ways_than_it_tests():
    learner = make("protonet", {}, model=MLP(4, None, hidden=(8,)))
    learner.meta_backward(episode(ways=6, shape=(4,)))
    assert learner.evaluate(episode(ways=3, shape=(4,)))["accuracy"].shape == (2,)


def test_registry_head_flag_and_search_spaces():
    for name, cls in [("protonet", ProtoNet), ("matchingnet", MatchingNet),
                      ("relationnet", RelationNet), ("siamese", SiameseNet), ("graphnet", GraphNet),
                      ("zeroshot_protonet", ZeroShotProtoNet)]:
        assert LEARNERS[name] is cls and issubclass(cls, MetricLearner) and cls.HEAD is False
        accepted = set(inspect.signature(cls.__init__).parameters)
        assert cls.SPACE and set(cls.SPACE) <= accepted
        assert "References:" in cls.__doc__


# ----------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("name,kwargs", IMAGE_LEARNERS, ids=IDS)
def test_unequal_shots_and_label_gaps_are_refused(name, kwargs):
    learner = make(name, kwargs)
    batch = episode(tasks=1, ways=3, shots=2)
    for bad in (torch.tensor([[0, 0, 0, 1, 2, 2]]), torch.tensor([[0, 0, 2, 2, 3, 3]])):
        with pytest.raises(TaskSpecError) as info:
            learner.evaluate(TaskBatch(batch.support_x, bad, batch.query_x, batch.query_y))
        assert isinstance(info.value, AutometaError) and isinstance(info.value, ValueError)
        with pytest.raises(TaskSpecError):
            learner.meta_backward(TaskBatch(batch.support_x, bad, batch.query_x, batch.query_y))


@pytest.mark.parametrize("spec,match", [
    ({"name": "protonet", "distance": "manhattan"}, "distance"),
    ({"name": "protonet", "temperature": 0}, "temperature"),
    ({"name": "matchingnet", "processing_steps": 0}, "processing_steps"),
    ({"name": "relationnet", "unpooled_blocks": 5}, "unpooled_blocks"),
    ({"name": "siamese", "positive_weight": 1.5}, "positive_weight"),
    ({"name": "graphnet", "max_ways": 1}, "max_ways"),
    ({"name": "zeroshot_protonet", "distance": "l1"}, "distance"),
])
def test_bad_hyperparameters_raise_config_errors(spec, match):
    with pytest.raises(ConfigError, match=match):
        build_learner(spec, Conv4(out_features=None, hidden=4), "classification")


def test_regression_and_headless_networks_are_refused():
    with pytest.raises(ConfigError, match="classification"):
        ProtoNet(MLP(1, None), task="regression")
    with pytest.raises(ConfigError, match="feature_dim"):
        SiameseNet(torch.nn.Flatten())


def test_graphnet_refuses_more_ways_than_built_for():
    learner = make("graphnet", {"max_ways": 2})
    with pytest.raises(TaskSpecError, match="max_ways"):
        learner.evaluate(episode(tasks=1, ways=3))


def test_float_labels_are_refused():
    learner = make("protonet", {})
    batch = episode(tasks=1)
    with pytest.raises(TaskSpecError, match="integer"):
        learner.predict(batch.support_x[0], batch.support_y[0].float(), batch.query_x[0])


# ----------------------------------------------------------------------------- zero-shot tasks

def test_seven_segment_codes_are_distinct_and_match_the_table():
    vectors = seven_segment_vectors()
    assert vectors.shape == (10, 7) and len({tuple(v) for v in vectors}) == 10
    assert vectors[8].sum() == 7 and vectors[1].tolist() == [0, 1, 1, 0, 0, 0, 0]
    assert all(vectors[d].sum() == len(SEVEN_SEGMENT[d]) for d in range(10))


def test_class_attribute_tasks_put_class_vectors_in_the_support_slot():
    y = np.repeat(np.arange(4), 5)
    data = ArrayDataset(np.random.default_rng(0).random((20, 1, 8, 8), dtype=np.float32), y)
    vectors = np.eye(4, dtype=np.float32)
    tasks = ClassAttributeTasks(data, vectors, classes=[0, 1, 3], ways=2, queries=3)
    batch = tasks.sample(4, torch.Generator().manual_seed(0))
    assert batch.support_x.shape == (4, 2, 4) and batch.query_x.shape == (4, 6, 1, 8, 8)
    for t in range(4):
        classes = batch.info["classes"][t]
        assert set(classes.tolist()) <= {0, 1, 3}
        torch.testing.assert_close(batch.support_x[t], torch.as_tensor(vectors)[classes])
        for i, label in enumerate(batch.query_y[t].tolist()):
            image = batch.query_x[t, i].numpy()
            source = [k for k in range(20) if np.array_equal(data.x[k], image)]
            assert y[source[0]] == classes[label]
    learner = ZeroShotProtoNet(MLP(64, None, hidden=(8,)), class_dim=4)
    learner.meta_backward(batch)
    assert learner.class_encoder.head.weight.grad.abs().sum() > 0
    with pytest.raises(TaskSpecError, match="ways"):
        ClassAttributeTasks(data, vectors, classes=[0, 1], ways=3, queries=1)
