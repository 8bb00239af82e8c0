"""The dataset loaders: shapes, polarity, splits, corrupted files and user arrays."""

from pathlib import Path

import numpy as np
import pytest

from autometa.data import (
    ArrayDataset,
    load_dataset,
    load_digits,
    load_fashion_mnist,
    load_mnist,
    load_omniglot,
)
from autometa.errors import AutometaError, ConfigError, DataIntegrityError

# Official class counts (data README).
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
FASHION_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                 "Bag", "Ankle boot"]


def _write_mnist_like(folder: Path, seed: int = 0, **extra) -> dict:
    rng = np.random.default_rng(seed)
    arrays = {"x_train": rng.integers(0, 256, (6, 28, 28), dtype=np.uint8),
              "y_train": rng.integers(0, 10, 6, dtype=np.uint8),
              "x_test": rng.integers(0, 256, (3, 28, 28), dtype=np.uint8),
              "y_test": rng.integers(0, 10, 3, dtype=np.uint8), **extra}
    folder.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(folder / "mnist.npz", **arrays)
    return arrays


# ----------------------------------------------------------------- MNIST-like files, synthetic

@pytest.mark.parametrize("train", [True, False])
def test_mnist_like_file_loads_scaled_and_channel_first(tmp_path, train):
    arrays = _write_mnist_like(tmp_path)
    split = "train" if train else "test"
    dataset = load_mnist(tmp_path, train=train)
    assert dataset.x.dtype == np.float32 and dataset.x.shape == (len(arrays[f"y_{split}"]), 1, 28, 28)
    np.testing.assert_array_equal(dataset.x[:, 0], arrays[f"x_{split}"] / np.float32(255))
    assert dataset.y.dtype == np.int64 and list(dataset.y) == list(arrays[f"y_{split}"])
    assert dataset.class_names == [str(i) for i in range(10)] and dataset.info["split"] == split


def test_fashion_mnist_class_names_come_from_the_file(tmp_path):
    _write_mnist_like(tmp_path, class_names=np.array(FASHION_NAMES))
    (tmp_path / "mnist.npz").rename(tmp_path / "fashion_mnist.npz")
    dataset = load_fashion_mnist(tmp_path, train=False)
    assert dataset.name == "fashion_mnist" and dataset.class_names == FASHION_NAMES


def test_truncated_npz_raises_data_integrity_error(tmp_path):
    _write_mnist_like(tmp_path)
    raw = (tmp_path / "mnist.npz").read_bytes()
    (tmp_path / "mnist.npz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataIntegrityError, match="Delete it and fetch it again"):
        load_mnist(tmp_path)


def test_non_zip_file_raises_data_integrity_error(tmp_path):
    (tmp_path / "omniglot.npz").write_bytes(b"<html>404 Not Found</html>")
    with pytest.raises(DataIntegrityError, match="omniglot.npz"):
        load_omniglot(tmp_path)


def test_damaged_npz_member_raises_data_integrity_error(tmp_path):
    _write_mnist_like(tmp_path)
    raw = bytearray((tmp_path / "mnist.npz").read_bytes())
    raw[len(raw) // 3] ^= 0xFF  # inside the compressed x_train data; the zip directory stays intact
    (tmp_path / "mnist.npz").write_bytes(bytes(raw))
    with pytest.raises(DataIntegrityError):
        load_mnist(tmp_path)


def test_npz_missing_an_array_raises_data_integrity_error(tmp_path):
    np.savez_compressed(tmp_path / "mnist.npz", x_train=np.zeros((1, 28, 28), np.uint8))
    with pytest.raises(DataIntegrityError):
        load_mnist(tmp_path)


# ----------------------------------------------------------------- the real offline files

def test_omniglot_28_shapes_polarity_and_labels(shared_data, omniglot_arrays):
    dataset = load_omniglot(shared_data)
    assert dataset.x.shape == (32460, 1, 28, 28) and dataset.x.dtype == np.float32
    assert 0.0 <= dataset.x.min() and dataset.x.max() <= 1.0
    # Ink is 1 after loading: the file stores white paper as 255, so x = (255 - raw) / 255.
    np.testing.assert_array_equal(dataset.x[::997, 0],
                                  (255 - omniglot_arrays["images28"][::997]) / np.float32(255))
    corners = dataset.x[:, 0, [0, 0, -1, -1], [0, -1, 0, -1]]
    assert (corners == 0.0).mean() > 0.99  # corners are paper, which loads as 0
    assert dataset.x.mean() < 0.2  # most of every image is paper
    np.testing.assert_array_equal(dataset.y, omniglot_arrays["char_id"])
    assert dataset.y.dtype == np.int64 and len(dataset.classes) == 1623
    assert len(dataset.info["alphabet_names"]) == 50 and dataset.info["size"] == 28
    assert set(dataset.meta) == {"alphabet", "background", "drawer"}


@pytest.mark.parametrize("background, characters, images, ids", [
    (True, 964, 19280, (0, 963)), (False, 659, 13180, (964, 1622))])
def test_omniglot_background_flag_selects_lakes_split(shared_data, background, characters, images, ids):
    dataset = load_omniglot(shared_data, background=background)
    assert len(dataset) == images and len(dataset.classes) == characters
    assert (dataset.y.min(), dataset.y.max()) == ids
    assert dataset.meta["background"].all() == background and dataset.meta["background"].any() == background
    assert np.bincount(dataset.y - ids[0]).tolist() == [20] * characters


def test_omniglot_105_unpacks_the_original_bits_with_ink_one(tmp_path, omniglot_arrays):
    # A small file with real rows from both sets keeps the 105x105 float copy small.
    rows = np.r_[0:20, 19280:19300]
    np.savez_compressed(tmp_path / "omniglot.npz", **{k: v[rows] for k, v in omniglot_arrays.items()
                                                      if k != "alphabet_names"},
                        alphabet_names=omniglot_arrays["alphabet_names"])
    dataset = load_omniglot(tmp_path, size=105)
    assert dataset.x.shape == (40, 1, 105, 105) and dataset.x.dtype == np.float32
    bits = np.unpackbits(omniglot_arrays["images105_packed"][rows], axis=1, count=105 * 105)
    np.testing.assert_array_equal(dataset.x.reshape(40, -1), 1 - bits)  # bit 1 = paper -> 0
    assert set(np.unique(dataset.x)) == {0.0, 1.0} and dataset.x.mean() < 0.2
    assert dataset.meta["background"].sum() == 20
    evaluation = load_omniglot(tmp_path, size=105, background=False)
    np.testing.assert_array_equal(evaluation.y, omniglot_arrays["char_id"][19280:19300])


def test_omniglot_rejects_other_sizes(tmp_path):
    with pytest.raises(ConfigError, match="28 or 105"):
        load_omniglot(tmp_path, size=64)


def test_mnist_test_split_has_the_official_class_counts(shared_data):
    dataset = load_mnist(shared_data, train=False)
    assert dataset.x.shape == (10000, 1, 28, 28)
    assert np.bincount(dataset.y).tolist() == MNIST_TEST_COUNTS
    assert dataset.x[:, 0, 0, 0].max() == 0.0 and dataset.x.max() == 1.0  # ink is high in MNIST


def test_fashion_mnist_test_split_names_and_counts(shared_data):
    dataset = load_dataset("fashion_mnist", root=shared_data, train=False)
    assert dataset.class_names == FASHION_NAMES
    assert np.bincount(dataset.y).tolist() == [1000] * 10


# ----------------------------------------------------------------- digits, registry, user arrays

def test_load_digits_is_sklearn_digits_scaled_to_unit_range():
    dataset = load_digits()
    assert dataset.x.shape == (1797, 1, 8, 8) and dataset.x.dtype == np.float32
    assert dataset.x.min() == 0.0 and dataset.x.max() == 1.0
    assert dataset.classes.tolist() == list(range(10)) and dataset.name == "digits"
    np.testing.assert_array_equal(load_dataset("digits").y, dataset.y)


def test_load_dataset_names_the_choices_for_an_unknown_name():
    with pytest.raises(ConfigError, match="Unknown dataset 'cifar10'.*omniglot"):
        load_dataset("cifar10")


@pytest.mark.parametrize("x, y, meta, match", [
    (np.zeros((3, 2)), np.zeros(4, int), {}, "one label per example"),
    (np.zeros((3, 2)), np.zeros((3, 1), int), {}, "one label per example"),
    (np.zeros((3, 2)), np.zeros(3), {}, "must be integers"),
    (np.zeros((3, 2)), np.zeros(3, int), {"alphabet": np.zeros(2)}, r"meta\['alphabet'\] has 2"),
])
def test_array_dataset_rejects_bad_input(x, y, meta, match):
    with pytest.raises(ConfigError, match=match) as info:
        ArrayDataset(x, y, meta=meta)
    assert isinstance(info.value, ValueError) and isinstance(info.value, AutometaError)


def test_array_dataset_subset_keeps_meta_aligned():
    dataset = ArrayDataset(np.arange(10).reshape(5, 2), np.array([0, 1, 0, 1, 2]),
                           meta={"group": np.array([5, 6, 7, 8, 9])})
    part = dataset.subset(dataset.y == 1, name="ones")
    assert len(part) == 2 and part.name == "ones" and part.meta["group"].tolist() == [6, 8]
    assert part.x.tolist() == [[2, 3], [6, 7]] and dataset.classes.tolist() == [0, 1, 2]


# ----------------------------------------------------------------- malformed arrays (issue #17)

@pytest.mark.parametrize("arrays, fragments", [
    ({"x_train": np.zeros((6, 784), np.uint8)}, ["'x_train'", "(6, 784)", "(n, 28, 28)"]),     # 1-D images
    ({"x_train": np.zeros((6, 28, 28), np.complex64)}, ["'x_train'", "complex64"]),           # not pixels
    ({"y_train": np.zeros(5, np.uint8)}, ["'y_train'", "(5,)", "one row per image (6)"]),     # too few labels
    ({"y_train": np.zeros((6, 1), np.uint8)}, ["'y_train'", "(6, 1)", "(n,) integer labels"]),
])
def test_malformed_mnist_arrays_name_the_file_and_the_expected_shape(tmp_path, arrays, fragments):
    _write_mnist_like(tmp_path, **arrays)
    with pytest.raises(DataIntegrityError) as info:
        load_mnist(tmp_path)
    for fragment in [str(tmp_path / "mnist.npz"), *fragments, "fetch it again"]:
        assert fragment in str(info.value)


def test_malformed_omniglot_arrays_name_the_file(tmp_path, omniglot_arrays):
    rows = np.r_[0:20, 19280:19300]
    arrays = {k: v[rows] for k, v in omniglot_arrays.items() if k != "alphabet_names"}
    arrays["drawer"] = arrays["drawer"][:-1]  # one entry short
    np.savez_compressed(tmp_path / "omniglot.npz", alphabet_names=omniglot_arrays["alphabet_names"], **arrays)
    with pytest.raises(DataIntegrityError, match=r"omniglot\.npz: array 'drawer' has shape \(39,\)"):
        load_omniglot(tmp_path)
