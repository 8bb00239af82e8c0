"""Labelled image datasets held in memory as numpy arrays."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from autometa.data._paths import find_file
from autometa.errors import ConfigError, DataIntegrityError


@dataclass
class ArrayDataset:
    """Labelled examples: ``x`` of shape ``(n, ...)`` (float32 or uint8) and integer ``y``.

    ``meta`` holds per-example side information of the same length (e.g. Omniglot's alphabet),
    ``info`` free-form facts about the source. Images are stored ``(n, channels, h, w)``.
    """

    x: np.ndarray
    y: np.ndarray
    name: str = "arrays"
    class_names: list[str] | None = None
    meta: dict[str, np.ndarray] = field(default_factory=dict)
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        self.x = np.asarray(self.x)
        self.y = np.asarray(self.y)
        if self.x.ndim < 1 or self.y.ndim != 1 or len(self.x) != len(self.y):
            raise ConfigError(
                f"An ArrayDataset needs x of shape (n, ...) and y of shape (n,). "
                f"Got x {self.x.shape} and y {self.y.shape}; pass one label per example."
            )
        if not np.issubdtype(self.y.dtype, np.integer):
            raise ConfigError(f"Labels y must be integers. Got dtype {self.y.dtype}; map classes to ints.")
        for key, value in self.meta.items():
            if len(value) != len(self.y):
                raise ConfigError(f"meta[{key!r}] has {len(value)} entries for {len(self.y)} examples.")

    def __len__(self) -> int:
        return len(self.y)

    @property
    def classes(self) -> np.ndarray:
        return np.unique(self.y)

    def subset(self, mask: np.ndarray, name: str | None = None) -> ArrayDataset:
        """The examples where ``mask`` (bool or index array) selects."""
        return ArrayDataset(
            self.x[mask], self.y[mask], name or self.name, self.class_names,
            {k: v[mask] for k, v in self.meta.items()}, dict(self.info),
        )


OMNIGLOT_SHA256 = "16f156ddc8b22dbfda3a3006cf265909d29b151cb1188e15dab472e32cf926a2"
_OMNIGLOT_HOWTO = (
    "Build it from the official zip files with `autometa data omniglot` (downloads them, checks "
    "their sha256 and converts), or `autometa data omniglot --from-zips DIR` offline."
)


def _load_npz(filename: str, root, how_to_get: str, keys: list[str],
              optional: tuple[str, ...] = ()) -> tuple[dict[str, np.ndarray], str]:
    """Read ``keys`` (and those of ``optional`` that exist) eagerly, so that a damaged or
    incomplete archive fails here with one clear error rather than later, half-way."""
    path = find_file(filename, root, how_to_get)
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [k for k in keys if k not in archive.files]
            if missing:
                raise DataIntegrityError(
                    f"{path} lacks the array(s) {missing} (it has {archive.files}). It is not the expected "
                    f"{filename}; delete it and fetch it again. {how_to_get}"
                )
            return {k: archive[k] for k in [*keys, *optional] if k in archive.files}, str(path)
    except DataIntegrityError:
        raise
    except Exception as exc:  # zipfile.BadZipFile, ValueError, OSError, CRC errors ...
        raise DataIntegrityError(
            f"{path} exists but could not be read as an .npz archive ({type(exc).__name__}: {exc}). "
            f"Delete it and fetch it again. {how_to_get}"
        ) from exc


def _check_arrays(path: str, key: str, array: np.ndarray, ndim: int, expected: str, how_to_get: str,
                  length: int | None = None) -> None:
    """Raise :class:`DataIntegrityError` unless ``array`` has ``ndim`` dimensions of real numbers
    (and ``length`` rows), so that a malformed file is blamed, not the model that reads it."""
    numeric = array.dtype.kind in "biuf"  # bool, signed, unsigned, float
    if array.ndim != ndim or not numeric or (length is not None and len(array) != length) or len(array) == 0:
        rows = f" with one row per image ({length})" if length is not None else ""
        raise DataIntegrityError(
            f"{path}: array {key!r} has shape {array.shape} and dtype {array.dtype}, but {expected}{rows} are "
            f"expected. The file is malformed; delete it and fetch it again. {how_to_get}"
        )


def load_omniglot(root: str | os.PathLike | None = None, size: int = 28,
                  background: bool | None = None) -> ArrayDataset:
    """Omniglot (Lake et al. 2015): 1623 characters of 50 alphabets, 20 drawings each.

    Args:
        root: folder holding ``omniglot.npz`` (or the file itself); see :mod:`autometa.data`.
        size: 28 (LANCZOS-downsampled, antialiased) or 105 (the original binary images).
        background: True for the 964 background characters, False for the 659 evaluation ones,
            None for all.

    Returns:
        An :class:`ArrayDataset` with float32 images ``(n, 1, size, size)`` in [0, 1], ink = 1,
        labels = global character id, and ``meta`` ``alphabet``, ``background``, ``drawer``.
    """
    if size not in (28, 105):
        raise ConfigError(f"Omniglot comes in size 28 or 105. Got size={size!r}; use 28 or 105.")
    image_key = "images28" if size == 28 else "images105_packed"
    d, path = _load_npz("omniglot.npz", root, _OMNIGLOT_HOWTO,
                        [image_key, "background", "alphabet_names", "char_id", "alphabet", "drawer"])
    n = len(d["char_id"])
    _check_arrays(path, image_key, d[image_key], 3 if size == 28 else 2,
                  "(n, 28, 28) uint8 images" if size == 28 else "(n, 1379) packed bits", _OMNIGLOT_HOWTO, length=n)
    for key in ("background", "char_id", "alphabet", "drawer"):
        _check_arrays(path, key, d[key], 1, f"(n,) per-image {key} values", _OMNIGLOT_HOWTO, length=n)
    bg = d["background"]
    mask = np.ones(len(bg), bool) if background is None else (bg == bool(background))
    if size == 28:
        x = (255 - d["images28"][mask]).astype(np.float32) / 255.0
    else:
        bits = np.unpackbits(d["images105_packed"][mask], axis=1, count=105 * 105)
        x = (1 - bits.reshape(-1, 105, 105)).astype(np.float32)
    names = [str(n) for n in d["alphabet_names"]]
    return ArrayDataset(
        x[:, None], d["char_id"][mask].astype(np.int64), "omniglot", None,
        {"alphabet": d["alphabet"][mask].astype(np.int64), "background": bg[mask],
         "drawer": d["drawer"][mask].astype(np.int64)},
        {"path": path, "alphabet_names": names, "size": size},
    )


def _load_mnist_like(filename: str, name: str, root, train: bool) -> ArrayDataset:
    how = (f"Convert the official IDX files with `autometa data {name}` "
           f"(downloads and checks them), or place {filename} there.")
    split = "train" if train else "test"
    d, path = _load_npz(filename, root, how, [f"x_{split}", f"y_{split}"], optional=("class_names",))
    _check_arrays(path, f"x_{split}", d[f"x_{split}"], 3, "(n, 28, 28) uint8 images", how)
    _check_arrays(path, f"y_{split}", d[f"y_{split}"], 1, "(n,) integer labels", how, length=len(d[f"x_{split}"]))
    x = d[f"x_{split}"].astype(np.float32)[:, None] / 255.0
    names = [str(n) for n in d["class_names"]] if "class_names" in d else [str(i) for i in range(10)]
    return ArrayDataset(x, d[f"y_{split}"].astype(np.int64), name, names, {}, {"path": path, "split": split})


def load_mnist(root: str | os.PathLike | None = None, train: bool = True) -> ArrayDataset:
    """MNIST (LeCun et al.): 28x28 digits, float32 in [0, 1], 60000 train / 10000 test."""
    return _load_mnist_like("mnist.npz", "mnist", root, train)


def load_fashion_mnist(root: str | os.PathLike | None = None, train: bool = True) -> ArrayDataset:
    """Fashion-MNIST (Xiao et al. 2017): 28x28 clothing images, 10 classes."""
    return _load_mnist_like("fashion_mnist.npz", "fashion_mnist", root, train)


def load_digits() -> ArrayDataset:
    """scikit-learn's 8x8 handwritten digits (1797 images, 10 classes), shipped with sklearn."""
    from sklearn.datasets import load_digits as _sk_digits

    bunch = _sk_digits()
    x = (bunch.images.astype(np.float32) / 16.0)[:, None]
    return ArrayDataset(x, bunch.target.astype(np.int64), "digits", [str(i) for i in range(10)],
                        {}, {"source": "sklearn.datasets.load_digits"})


LOADERS = {
    "omniglot": load_omniglot,
    "mnist": load_mnist,
    "fashion_mnist": load_fashion_mnist,
    "digits": load_digits,
}


def load_npz_dataset(path: str | os.PathLike, train: bool = True, root=None) -> ArrayDataset:
    """A dataset saved as an ``.npz`` file with ``x_train``/``y_train`` (and optionally ``x_test``/``y_test``,
    ``class_names``): e.g. a distilled set written by :func:`autometa.slots.data.save_support`.

    Images are ``(n, h, w)`` or ``(n, c, h, w)``, uint8 (scaled to [0, 1]) or float (kept as they are).
    """
    split = "train" if train else "test"
    how = (f"Pass an .npz file with x_{split} and y_{split} arrays (autometa.slots.data.save_support writes "
           f"x_train/y_train; a distilled set has no test split: test on the source dataset).")
    if not os.path.isfile(path):
        raise ConfigError(f"The dataset file {str(path)!r} does not exist. {how}")
    d, path = _load_npz(os.path.basename(path), path, how,
                        [f"x_{split}", f"y_{split}"], optional=("class_names",))
    x = d[f"x_{split}"]
    x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise DataIntegrityError(f"x_{split} in {path} must be (n, h, w) or (n, c, h, w) images. Got {x.shape}.")
    names = [str(n) for n in d["class_names"]] if "class_names" in d else None
    return ArrayDataset(x, d[f"y_{split}"].astype(np.int64), os.path.basename(path), names, {},
                        {"path": path, "split": split})


def load_dataset(name: str, **kwargs) -> ArrayDataset:
    """Load a dataset by name (``omniglot``, ``mnist``, ``fashion_mnist``, ``digits``) or from an ``.npz``
    file path (:func:`load_npz_dataset`, e.g. a distilled set)."""
    if str(name).endswith(".npz"):
        return load_npz_dataset(name, **kwargs)
    if name not in LOADERS:
        raise ConfigError(f"Unknown dataset {name!r}. Choose one of {sorted(LOADERS)}, or the path of an .npz "
                          f"file with x_train/y_train.")
    return LOADERS[name](**kwargs)
