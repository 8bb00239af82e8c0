"""The device-resident episode sampler gives the CPU sampler's episodes (issue 15)."""

import numpy as np
import pytest
import torch

from autometa.data import ArrayDataset
from autometa.tasks import FewShotClassification


def dataset(seed=0, classes=9, side=5):
    rng = np.random.default_rng(seed)
    counts = rng.integers(4, 9, classes)  # uneven classes: the padded index table matters
    y = np.repeat(np.arange(classes), counts)
    x = rng.standard_normal((len(y), 1, side, side)).astype(np.float32)
    order = rng.permutation(len(y))  # classes interleaved in the file
    return ArrayDataset(x[order], y[order])


def tasks(rotations=(0, 1, 2, 3)):
    # a split that leaves classes 0 and 5 out: only this split's images go to the device
    return FewShotClassification(dataset(), [1, 2, 3, 4, 6, 7, 8], ways=3, shots=2, queries=2,
                                 rotations=rotations)


def equal(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.tensors, b.tensors)) and a.info.keys() == b.info.keys() \
        and all(torch.equal(a.info[k], b.info[k]) for k in a.info)


@pytest.mark.parametrize("sync_free", [False, True])  # True: the rotation path used on GPUs
def test_device_copy_gives_the_cpu_samplers_episodes(sync_free):
    host = tasks()
    device = host.to("cpu")
    device._sync_free = sync_free
    assert device._x.shape[0] < len(dataset().y)  # only the split's images were copied
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    for _ in range(4):
        assert equal(host.sample(5, g1), device.sample(5, g2))
    assert torch.equal(g1.get_state(), g2.get_state())  # the same random stream was consumed


def test_episode_content_is_the_images_the_indices_name():
    data, device = dataset(), tasks().to("cpu")
    device._sync_free = True
    batch = device.sample(6, torch.Generator().manual_seed(11))
    x = torch.cat([batch.support_x.view(6, 3, 2, 1, 5, 5), batch.query_x.view(6, 3, 2, 1, 5, 5)], dim=2)
    images = torch.as_tensor(data.x)[batch.info["example_index"]]  # (6, 3, 4, 1, 5, 5)
    for t in range(6):
        for c in range(3):
            turns = int(batch.info["rotations"][t, c])
            assert torch.equal(x[t, c], torch.rot90(images[t, c], turns, dims=(-2, -1)))
            assert set(data.y[batch.info["example_index"][t, c].numpy()]) == {int(batch.info["classes"][t, c])}
    assert {int(r) for r in batch.info["rotations"].flatten()} > {0}  # rotations were exercised


def test_unrotated_split_and_copy_of_a_copy():
    host = tasks(rotations=(0,))
    twice = host.to("cpu").to("cpu")
    assert equal(host.sample(4, torch.Generator().manual_seed(0)), twice.sample(4, torch.Generator().manual_seed(0)))
