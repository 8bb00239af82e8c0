import numpy as np
import pytest
import torch

from autometa.data import ArrayDataset
from autometa.errors import AutometaError, TaskSpecError
from autometa.tasks import FewShotClassification, RandomQuadratics, Sinusoid, make_tasks, omniglot_splits
from tests.conftest import needs_data


def toy_dataset(classes=6, per_class=7, side=4):
    x = np.arange(classes * per_class * side * side, dtype=np.float32).reshape(-1, 1, side, side)
    y = np.repeat(np.arange(classes), per_class)
    return ArrayDataset(x, y)


def test_episode_shapes_labels_and_disjoint_support_query():
    data = toy_dataset()
    tasks = FewShotClassification(data, np.arange(6), ways=3, shots=2, queries=4)
    batch = tasks.sample(5, torch.Generator().manual_seed(0))
    assert batch.support_x.shape == (5, 6, 1, 4, 4) and batch.query_x.shape == (5, 12, 1, 4, 4)
    assert batch.support_y.tolist()[0] == [0, 0, 1, 1, 2, 2]
    for t in range(5):
        for c in range(3):
            s = batch.support_x[t][batch.support_y[t] == c]
            q = batch.query_x[t][batch.query_y[t] == c]
            # every image of one label comes from one dataset class (a pixel value identifies it)
            ids = {int(v) // (7 * 16) for v in torch.cat([s, q])[:, 0, 0, 0]}
            assert len(ids) == 1 and ids.pop() == int(batch.info["classes"][t, c])
            # support and query never share an example
            s_set = {tuple(v.flatten().tolist()) for v in s}
            assert not s_set & {tuple(v.flatten().tolist()) for v in q}


def test_same_seed_same_tasks_different_seed_different_tasks():
    tasks = FewShotClassification(toy_dataset(), np.arange(6), ways=3, shots=1, queries=2)
    a = tasks.sample(4, torch.Generator().manual_seed(7))
    b = tasks.sample(4, torch.Generator().manual_seed(7))
    c = tasks.sample(4, torch.Generator().manual_seed(8))
    assert torch.equal(a.support_x, b.support_x) and torch.equal(a.query_x, b.query_x)
    assert not torch.equal(a.support_x, c.support_x)


def test_rotations_make_new_classes():
    data = toy_dataset(classes=2, per_class=3)
    tasks = FewShotClassification(data, np.arange(2), ways=8, shots=1, queries=1, rotations=(0, 1, 2, 3))
    batch = tasks.sample(1, torch.Generator().manual_seed(0))
    assert tasks.num_classes == 8
    assert sorted(zip(batch.info["classes"][0].tolist(), batch.info["rotations"][0].tolist())) == \
        [(c, r) for c in range(2) for r in range(4)]
    rotated = batch.info["rotations"][0] == 1
    cls = int(batch.info["classes"][0][rotated][0])
    image = batch.support_x[0][rotated][0, 0]
    originals = torch.as_tensor(data.x[data.y == cls][:, 0])
    assert any(torch.equal(image, torch.rot90(o, 1)) for o in originals)


@pytest.mark.parametrize("kwargs, match", [
    (dict(ways=7, shots=1, queries=1), "ways"),
    (dict(ways=3, shots=5, queries=5), "shots"),
    (dict(ways=3, shots=0, queries=1), "shots"),
    (dict(ways=1, shots=1, queries=1), "ways"),
])
def test_impossible_requests_raise_clear_errors(kwargs, match):
    with pytest.raises(TaskSpecError, match=match) as info:
        FewShotClassification(toy_dataset(), np.arange(6), **kwargs)
    assert isinstance(info.value, ValueError) and isinstance(info.value, AutometaError)


def test_sinusoid_matches_the_maml_paper_ranges():
    batch = Sinusoid(shots=10, queries=7).sample(2000, torch.Generator().manual_seed(0))
    amp, phase = batch.info["amplitude"], batch.info["phase"]
    assert 0.1 <= amp.min() and amp.max() <= 5.0 and 0 <= phase.min() and phase.max() <= np.pi
    assert batch.support_x.shape == (2000, 10, 1) and batch.query_x.shape == (2000, 7, 1)
    assert batch.support_x.abs().max() <= 5.0
    expected = amp.view(-1, 1, 1) * torch.sin(batch.query_x - phase.view(-1, 1, 1))
    assert torch.allclose(batch.query_y, expected)


def test_sinusoid_bad_input():
    with pytest.raises(TaskSpecError):
        Sinusoid(shots=0)
    with pytest.raises(TaskSpecError, match="low > high"):
        Sinusoid(amplitude=(5.0, 0.1))


def test_quadratics():
    batch = RandomQuadratics(10).sample(3, torch.Generator().manual_seed(0))
    theta = torch.linalg.solve(batch.support_x[0], batch.support_y[0])
    assert RandomQuadratics.loss(theta, batch.support_x[0], batch.support_y[0]) < 1e-8


def test_digits_tasks_from_config():
    train = make_tasks({"name": "digits", "ways": 5, "shots": 1, "queries": 5}, "train")
    test = make_tasks({"name": "digits", "ways": 5, "shots": 1, "queries": 5}, "test")
    assert not set(train._classes.tolist()) & set(test._classes.tolist())
    with pytest.raises(AutometaError, match="no classes"):
        make_tasks({"name": "digits"}, "val")


@needs_data()
def test_omniglot_vinyals_and_lake_splits_are_disjoint():
    from autometa.data import load_omniglot

    data = load_omniglot()
    for scheme in ("vinyals", "lake"):
        parts = omniglot_splits(data, scheme)
        sets = {k: set(v.tolist()) for k, v in parts.items()}
        assert not (sets["train"] & sets["val"]) and not (sets["train"] & sets["test"])
        assert not (sets["val"] & sets["test"])
    vin = omniglot_splits(data, "vinyals")
    assert len(vin["train"]) + len(vin["val"]) == 1200 and len(vin["test"]) == 423
    lake = omniglot_splits(data, "lake")
    assert len(lake["train"]) + len(lake["val"]) == 964 and len(lake["test"]) == 659
    tasks = make_tasks({"name": "omniglot", "ways": 20, "shots": 5, "queries": 15}, "test")
    assert tasks.num_classes == 423 * 4
    with pytest.raises(TaskSpecError, match="shots"):
        make_tasks({"name": "omniglot", "ways": 5, "shots": 10, "queries": 15}, "test")


@pytest.mark.parametrize("value, split, expected", [
    (None, "test", (0, 1, 2, 3)),
    ([0, 90, 180, 270], "test", (0, 1, 2, 3)),            # degrees
    ([0, 1], "train", (0, 1)),                            # quarter turns
    ({"train": [0, 90, 180, 270], "test": [0]}, "test", (0,)),
    ({"train": [0, 90, 180, 270], "test": [0]}, "train", (0, 1, 2, 3)),
    ({"train": [0, 90]}, "val", (0, 1, 2, 3)),            # a split left out keeps its default
])
def test_rotations_per_split(value, split, expected):
    from autometa.tasks import split_rotations

    assert split_rotations(value, split, (0, 1, 2, 3)) == expected


@pytest.mark.parametrize("value, match", [([45], "45"), ([], r"\[\]"), ({"tset": [0]}, "tset"), (["a"], "'a'")])
def test_bad_rotations_are_config_errors(value, match):
    from autometa.errors import ConfigError
    from autometa.tasks import split_rotations

    with pytest.raises(ConfigError, match=match):
        split_rotations(value, "test", (0,))


def test_per_split_rotations_reach_the_episodes():
    spec = {"name": "digits", "ways": 5, "shots": 1, "queries": 2,
            "rotations": {"train": [0, 90, 180, 270], "test": [0]}}
    assert make_tasks(spec, "train").num_classes == 5 * 4
    test = make_tasks(spec, "test")
    assert test.num_classes == 5
    assert set(test.sample(8, torch.Generator().manual_seed(0)).info["rotations"].unique().tolist()) == {0}


@pytest.mark.parametrize("spec, match", [
    ({"name": "sinusoid", "shot": 5}, "did you mean 'shots'"),
    ({"name": "digits", "way": 5}, "did you mean 'ways'"),
    ({"name": "digits", "scheme": "lake"}, "'scheme'"),           # Omniglot-only key
    ({"name": "sinusoidal"}, "did you mean 'sinusoid'"),
])
def test_unknown_task_keys_fail_with_a_suggestion(spec, match):
    from autometa.errors import ConfigError

    with pytest.raises(ConfigError, match=match):
        make_tasks(spec, "train")


def test_sinusoid_arguments_are_passed_not_ignored():
    tasks = make_tasks({"name": "sinusoid", "amplitude": [1.0, 1.0]}, "train")
    assert torch.allclose(tasks.sample(4, torch.Generator().manual_seed(0)).info["amplitude"], torch.ones(4))


@needs_data()
def test_lake_scheme_rotates_only_training_characters_by_default():
    lake = {"name": "omniglot", "scheme": "lake", "ways": 5, "shots": 1, "queries": 1}
    assert make_tasks(lake, "test").num_classes == 659       # Lake et al.: evaluation characters unrotated
    assert make_tasks(lake, "val").num_classes == 100
    assert make_tasks(lake, "train").num_classes == (964 - 100) * 4
    rotated = make_tasks({**lake, "rotations": {"test": [0, 90, 180, 270]}}, "test")
    assert rotated.num_classes == 659 * 4
    vinyals = make_tasks({**lake, "scheme": "vinyals"}, "test")   # unchanged default
    assert vinyals.num_classes == 423 * 4
