"""Sequence episodes (MANN's online protocol): order, balance, labels, presentation counts."""

import numpy as np
import pytest
import torch

from autometa.data import ArrayDataset
from autometa.errors import AutometaError
from autometa.tasks import SequenceClassification, make_tasks, presentation_index
from tests.conftest import needs_data


def tiny_dataset(classes=8, per_class=12, side=8):
    rng = np.random.default_rng(0)
    x = rng.random((classes * per_class, 1, side, side)).astype(np.float32)
    return ArrayDataset(x, np.repeat(np.arange(classes), per_class))


def naive_presentation_index(labels):
    out = []
    for row in labels.tolist():
        seen, counts = {}, []
        for label in row:
            seen[label] = seen.get(label, 0) + 1
            counts.append(seen[label])
        out.append(counts)
    return torch.tensor(out)


def test_presentation_index_counts_earlier_showings_of_the_same_class():
    labels = torch.randint(0, 4, (3, 17), generator=torch.Generator().manual_seed(0))
    assert torch.equal(presentation_index(labels), naive_presentation_index(labels))


def test_episode_is_balanced_shuffled_and_the_same_sequence_as_support_and_query():
    tasks = SequenceClassification(tiny_dataset(), np.arange(8), ways=4, length=20, image_size=6)
    batch = tasks.sample(3, torch.Generator().manual_seed(1))
    assert batch.support_x.shape == (3, 20, 1, 6, 6) and batch.support_y.shape == (3, 20)
    assert batch.query_x is batch.support_x and batch.query_y is batch.support_y
    for row in batch.support_y:
        assert torch.equal(torch.bincount(row, minlength=4), torch.full((4,), 5))
    assert not torch.equal(batch.support_y[0], batch.support_y[0].sort().values)  # not grouped by class
    assert torch.equal(batch.info["instance"], naive_presentation_index(batch.support_y))
    # the same class is never shown twice with the same image in one episode
    flat = batch.support_x[0].flatten(1)
    assert torch.unique(flat, dim=0).shape[0] == 20
    again = tasks.sample(3, torch.Generator().manual_seed(1))
    assert torch.equal(again.support_x, batch.support_x) and torch.equal(again.support_y, batch.support_y)


@pytest.mark.parametrize("kwargs, match", [({"length": 21}, "multiple of `ways`"), ({"ways": 1}, "ways"),
                                           ({"ways": 10, "length": 20}, "classes"), ({"length": 60}, "examples|shots"),
                                           ({"image_size": 0}, "image_size")])
def test_bad_episode_settings_are_clear_errors(kwargs, match):
    with pytest.raises(AutometaError, match=match):
        SequenceClassification(tiny_dataset(), np.arange(8), **{"ways": 4, "length": 20, **kwargs})


@needs_data()
def test_omniglot_sequence_splits_are_disjoint_and_20_pixels():
    spec = {"name": "omniglot_sequence"}
    train, test = make_tasks(spec, "train"), make_tasks(spec, "test")
    batch = test.sample(2, torch.Generator().manual_seed(0))
    assert batch.support_x.shape == (2, 50, 1, 20, 20)
    train_chars = set(train._episodes._classes.tolist())
    assert train_chars.isdisjoint(test._episodes._classes.tolist())
    assert test.num_classes == 659  # the evaluation alphabets, unrotated
