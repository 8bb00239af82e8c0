"""Getting the dataset files: verified downloads of the official releases, converted to ``.npz``.

The loaders in :mod:`autometa.data` read ``omniglot.npz``, ``mnist.npz`` and
``fashion_mnist.npz`` (the format is described in the data README). This module builds those
files from the official releases, either downloaded here (with size, sha256 and md5 checked)
or already on disk:

- Omniglot: ``images_background.zip`` and ``images_evaluation.zip`` of brendenlake/omniglot,
  folders ``images_background/<Alphabet>/characterNN/XXXX_YY.png`` of 105x105 binary PNGs.
- MNIST and Fashion-MNIST: the four IDX files ``{train,t10k}-{images-idx3,labels-idx1}-ubyte``,
  gzip-compressed or not.

Every file is written to a temporary name in its destination folder and renamed into place only
when complete and verified, so an interrupted run never leaves a half-written file behind.

References:
    Lake, Salakhutdinov & Tenenbaum (2015), "Human-level concept learning through probabilistic
    program induction", Science (Omniglot). LeCun, Bottou, Bengio & Haffner (1998),
    "Gradient-based learning applied to document recognition" (MNIST). Xiao, Rasul & Vollgraf
    (2017), "Fashion-MNIST: a novel image dataset for benchmarking machine learning algorithms".
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import os
import re
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import NamedTuple

import numpy as np

from autometa.data._paths import ENV_VAR, cache_dir
from autometa.errors import (
    AutometaError,
    BackendUnavailableError,
    ConfigError,
    DataIntegrityError,
    DataNotFoundError,
)


@dataclass(frozen=True)
class RemoteFile:
    """One file of an official release: where to download it and how to recognise it.

    ``urls`` are tried in order (mirrors); the file is accepted only if its ``size``,
    ``sha256`` and ``md5`` all match.
    """

    name: str
    urls: tuple[str, ...]
    size: int
    sha256: str
    md5: str


# Checksums: sha256 and sizes as recorded by TensorFlow Datasets (tensorflow/datasets,
# tensorflow_datasets/url_checksums/{omniglot,mnist,fashion_mnist}.txt); md5 as published by the
# dataset authors and used by torchvision (torchvision.datasets.{Omniglot,MNIST,FashionMNIST}).
_OMNIGLOT_URLS = (
    "https://raw.githubusercontent.com/brendenlake/omniglot/master/python/",
    "https://github.com/brendenlake/omniglot/raw/master/python/",
)
OMNIGLOT_FILES = (
    RemoteFile("images_background.zip", tuple(u + "images_background.zip" for u in _OMNIGLOT_URLS),
               9464212, "ad41ab679c8b5d90b271ef46be6987cc81211774a695c29dcc5367b2b26ee640",
               "68d2efa1b9178cc56df9314c21c6e718"),
    RemoteFile("images_evaluation.zip", tuple(u + "images_evaluation.zip" for u in _OMNIGLOT_URLS),
               6462886, "1f61a8f3366785b057fc117d9228e78a16e3d976c8953b2a10fcc74cf0609cee",
               "6b91aef0f799c5bb55b94e3f2daec811"),
)

_MNIST_URLS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
MNIST_FILES = (
    RemoteFile("train-images-idx3-ubyte.gz", tuple(u + "train-images-idx3-ubyte.gz" for u in _MNIST_URLS),
               9912422, "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
               "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
    RemoteFile("train-labels-idx1-ubyte.gz", tuple(u + "train-labels-idx1-ubyte.gz" for u in _MNIST_URLS),
               28881, "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
               "d53e105ee54ea40749a09fcbcd1e9432"),
    RemoteFile("t10k-images-idx3-ubyte.gz", tuple(u + "t10k-images-idx3-ubyte.gz" for u in _MNIST_URLS),
               1648877, "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
               "9fb629c4189551a2d022fa330f9573f3"),
    RemoteFile("t10k-labels-idx1-ubyte.gz", tuple(u + "t10k-labels-idx1-ubyte.gz" for u in _MNIST_URLS),
               4542, "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
               "ec29112dd5afa0611ce80d1b7f02629c"),
)

# The S3 "website" endpoint serves plain http only; the checksums make that safe.
_FASHION_URLS = (
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
)
FASHION_MNIST_FILES = (
    RemoteFile("train-images-idx3-ubyte.gz", tuple(u + "train-images-idx3-ubyte.gz" for u in _FASHION_URLS),
               26421880, "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
               "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
    RemoteFile("train-labels-idx1-ubyte.gz", tuple(u + "train-labels-idx1-ubyte.gz" for u in _FASHION_URLS),
               29515, "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
               "25c81989df183df01b3e8a0aad5dffbe"),
    RemoteFile("t10k-images-idx3-ubyte.gz", tuple(u + "t10k-images-idx3-ubyte.gz" for u in _FASHION_URLS),
               4422102, "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
               "bef4ecab320f06d8554ea6380940ec79"),
    RemoteFile("t10k-labels-idx1-ubyte.gz", tuple(u + "t10k-labels-idx1-ubyte.gz" for u in _FASHION_URLS),
               5148, "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
               "bb300cfdad3c16e7a12a480ee83cd310"),
)

FASHION_MNIST_CLASS_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
    "Ankle boot",
)

# The official counts; a conversion that gives other counts says so in its summary.
OMNIGLOT_COUNTS = {"images": 32460, "characters": 1623, "background_characters": 964,
                   "evaluation_characters": 659, "alphabets": 50}
MNIST_COUNTS = {"train": 60000, "test": 10000}

SOURCES = {"omniglot": OMNIGLOT_FILES, "mnist": MNIST_FILES, "fashion_mnist": FASHION_MNIST_FILES}
DATASETS = tuple(SOURCES)

_CHUNK = 1 << 20


# --------------------------------------------------------------------------- files and downloads

def file_digests(path: str | os.PathLike) -> dict:
    """The ``size`` (bytes), ``sha256`` and ``md5`` (hex) of a file, read in 1 MiB chunks."""
    sha256, md5, size = hashlib.sha256(), hashlib.md5(usedforsecurity=False), 0
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            sha256.update(chunk)
            md5.update(chunk)
            size += len(chunk)
    return {"size": size, "sha256": sha256.hexdigest(), "md5": md5.hexdigest()}


def _mismatches(digests: dict, remote: RemoteFile) -> list[str]:
    expected = {"size": remote.size, "sha256": remote.sha256, "md5": remote.md5}
    return [f"{key} {digests[key]} (expected {want})" for key, want in expected.items()
            if digests[key] != want]


def _atomic_target(dest: Path) -> tuple[int, str]:
    # The temporary file lives beside the target so that the final rename stays on one filesystem
    # and is atomic; its hidden ".part" name marks leftovers of a killed process as incomplete.
    dest.parent.mkdir(parents=True, exist_ok=True)
    return tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)


def _remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def download(remote: RemoteFile, folder: str | os.PathLike, *, timeout: float = 60.0,
             progress: bool = False, hint: str = "") -> Path:
    """Download ``remote`` into ``folder`` and verify its size, sha256 and md5.

    A file already there with the right checksums is kept and not downloaded again. Mirrors in
    ``remote.urls`` are tried in order when one cannot be reached. The bytes go to a temporary
    file that is renamed to ``folder/remote.name`` only once verified, so an interrupted or
    failed download leaves no partial file under the final name.

    Args:
        remote: the file to get (see :data:`OMNIGLOT_FILES`, :data:`MNIST_FILES`, ...).
        folder: where to put it; created if needed.
        timeout: seconds to wait for the server on each network operation.
        progress: show a progress bar (tqdm) on stderr.
        hint: what to tell the user to do instead if the download cannot be used.

    Returns:
        The path of the verified file.

    Raises:
        DataIntegrityError: the downloaded bytes do not have the published size or checksums
            (nothing is kept).
        DataNotFoundError: no URL could be reached.

    Example:
        >>> download(OMNIGLOT_FILES[0], "~/.cache/autometa/downloads/omniglot")  # doctest: +SKIP
    """
    dest = Path(folder).expanduser() / remote.name
    if dest.is_file() and not _mismatches(file_digests(dest), remote):
        return dest
    failures = []
    for url in remote.urls:
        try:
            _download_one(url, dest, remote, timeout, progress, hint)
            return dest
        except urllib.error.HTTPError as exc:  # the server answered, without the file
            failures.append(f"{url} (HTTP {exc.code} {exc.reason})")
        except OSError as exc:  # unreachable host, refused connection, timeout, cut transfer
            failures.append(f"{url} ({getattr(exc, 'reason', None) or exc})")
    raise DataNotFoundError(
        f"Could not download {remote.name}; tried {'; '.join(failures)}. Check the internet "
        f"connection (or proxy settings) and run again; an HTTP 404 means the file has moved. "
        f"{hint}".rstrip()
    )


def _download_one(url: str, dest: Path, remote: RemoteFile, timeout: float, progress: bool,
                  hint: str) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": "autometa (python urllib)"})
    sha256, md5, size = hashlib.sha256(), hashlib.md5(usedforsecurity=False), 0
    fd, tmp = _atomic_target(dest)
    bar = None
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(request, timeout=timeout) as response:
            if progress:
                from tqdm import tqdm

                bar = tqdm(total=remote.size, unit="B", unit_scale=True, desc=remote.name, file=sys.stderr)
            while chunk := response.read(_CHUNK):
                size += len(chunk)
                if size > remote.size:  # stop early rather than fill the disk with a wrong file
                    break
                sha256.update(chunk)
                md5.update(chunk)
                out.write(chunk)
                if bar is not None:
                    bar.update(len(chunk))
            out.flush()
            os.fsync(out.fileno())
        if size > remote.size:
            wrong = [f"it has more than the expected {remote.size} bytes"]
        else:
            wrong = _mismatches({"size": size, "sha256": sha256.hexdigest(), "md5": md5.hexdigest()}, remote)
        if wrong:
            raise DataIntegrityError(
                f"The file downloaded from {url} is not the official {remote.name}: "
                f"{'; '.join(wrong)}. It was not kept. Run the command again (the transfer may have "
                f"been cut short or altered by a proxy). If it fails again, download {remote.name} "
                f"by hand, check that `sha256sum {remote.name}` prints {remote.sha256}. {hint}".rstrip()
            )
        os.replace(tmp, dest)
    except BaseException:
        _remove_quietly(tmp)
        raise
    finally:
        if bar is not None:
            bar.close()


def _write_npz_atomic(path: Path, arrays: dict) -> None:
    fd, tmp = _atomic_target(path)
    try:
        # A file object, not a name: numpy would append ".npz" to a name that lacks it.
        with os.fdopen(fd, "wb") as out:
            np.savez_compressed(out, **arrays)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        _remove_quietly(tmp)
        raise


# --------------------------------------------------------------------------- Omniglot

def _require_pillow():
    try:
        from PIL import Image
    except ImportError as exc:
        raise BackendUnavailableError(
            "Converting the Omniglot zip files needs Pillow to read their PNG images, and it is not "
            "installed: pip install Pillow"
        ) from exc
    return Image


# Official names have fixed widths, which also keeps every number inside its int16/int8 field.
_CHARACTER_FOLDER = re.compile(r"character(\d{2})")
_DRAWING_FILE = re.compile(r"(\d{4})_(\d{2})\.png")


class _Drawing(NamedTuple):
    """One Omniglot PNG, decoded; numbers are 0-based."""

    char_id: int
    drawer: int
    alphabet: str
    character: int
    background: bool
    packed105: np.ndarray
    image28: np.ndarray


def _read_omniglot_zip(zip_path: Path, background: bool, image_module) -> list[_Drawing]:
    """Every drawing in one official Omniglot zip file, checked against the layout."""
    records = []
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataIntegrityError(
            f"{zip_path} could not be opened as a zip file ({exc}). Download it again "
            f"(`autometa data omniglot` does so and checks it)."
        ) from exc
    with archive:
        for info in archive.infolist():
            parts = PurePosixPath(info.filename).parts
            # Skip folders and the metadata some zip tools add (__MACOSX/, .DS_Store).
            if info.is_dir() or any(p.startswith(("__MACOSX", ".")) for p in parts):
                continue
            if not parts[-1].lower().endswith(".png"):
                continue
            folder_match = _CHARACTER_FOLDER.fullmatch(parts[-2]) if len(parts) >= 3 else None
            file_match = _DRAWING_FILE.fullmatch(parts[-1])
            if folder_match is None or file_match is None:
                raise DataIntegrityError(
                    f"{zip_path} holds {info.filename!r}, which does not follow the Omniglot layout "
                    f"<Alphabet>/characterNN/XXXX_YY.png. Use the official images_background.zip and "
                    f"images_evaluation.zip of github.com/brendenlake/omniglot (python/ folder)."
                )
            char_number, drawing = int(file_match.group(1)), int(file_match.group(2))
            character = int(folder_match.group(1))
            if min(char_number, drawing, character) < 1:
                raise DataIntegrityError(
                    f"{zip_path}: {info.filename!r} has a number 0; Omniglot ids, drawings and "
                    f"characterNN folders count from 1. Use the official Omniglot zip files."
                )
            try:
                with archive.open(info) as handle:
                    image = image_module.open(io.BytesIO(handle.read()))
                    image.load()
            except Exception as exc:  # bad CRC, truncated or undecodable PNG
                raise DataIntegrityError(
                    f"{zip_path}: {info.filename!r} could not be read as a PNG image ({exc}). "
                    f"Download the zip file again."
                ) from exc
            if image.size != (105, 105):
                raise DataIntegrityError(
                    f"{zip_path}: {info.filename!r} is {image.size[0]}x{image.size[1]} pixels; Omniglot "
                    f"images are 105x105. Use the official zip files, not a resized copy."
                )
            gray = image.convert("L")
            pixels = np.asarray(gray)
            if not np.isin(pixels, (0, 255)).all():
                raise DataIntegrityError(
                    f"{zip_path}: {info.filename!r} is not a black-and-white image; the official "
                    f"Omniglot PNGs are binary. Use the official zip files."
                )
            # The format's recipe: LANCZOS on the 8-bit grayscale image; bit 1 = white paper.
            small = np.asarray(gray.resize((28, 28), image_module.Resampling.LANCZOS))
            packed = np.packbits(pixels.reshape(-1) == 255)
            records.append(_Drawing(char_number - 1, drawing - 1, parts[-3], character - 1, background,
                                    packed, small))
    if not records:
        raise DataIntegrityError(
            f"{zip_path} holds no Omniglot PNG images (<Alphabet>/characterNN/XXXX_YY.png). Use the "
            f"official images_background.zip and images_evaluation.zip."
        )
    return records


def convert_omniglot_zips(background_zip: str | os.PathLike, evaluation_zip: str | os.PathLike,
                          out_path: str | os.PathLike) -> dict:
    """Convert the two official Omniglot zip files into ``omniglot.npz``.

    Images are ordered by global character id (``XXXX`` - 1) and then drawing (``YY`` - 1), with
    ``images28`` made by PIL ``LANCZOS`` on the 8-bit grayscale image and ``images105_packed``
    the original binary image, row-major, ``np.packbits`` (bit 1 = white paper). The file is
    written atomically. Needs Pillow.

    Args:
        background_zip: ``images_background.zip`` (its images get ``background`` = True).
        evaluation_zip: ``images_evaluation.zip``.
        out_path: the ``.npz`` file to write.

    Returns:
        A summary: ``path``, ``images``, ``characters``, ``background_characters``,
        ``evaluation_characters``, ``alphabets`` and ``complete`` (True when the counts are the
        official 32460 / 1623 / 964 / 659 / 50).

    Raises:
        BackendUnavailableError: Pillow is not installed.
        DataIntegrityError: a zip is unreadable, or its content does not follow the Omniglot
            layout (names, 105x105 binary images, one id per character, no repeated drawing).

    References:
        Lake, Salakhutdinov & Tenenbaum (2015), "Human-level concept learning through
        probabilistic program induction", Science.
    """
    image_module = _require_pillow()
    records = (_read_omniglot_zip(Path(background_zip), True, image_module)
               + _read_omniglot_zip(Path(evaluation_zip), False, image_module))

    owner: dict[int, tuple] = {}
    seen: set[tuple[int, int]] = set()
    for r in records:
        where = (r.alphabet, r.character, r.background)
        if owner.setdefault(r.char_id, where) != where:
            raise DataIntegrityError(
                f"Omniglot character id {r.char_id + 1:04d} appears in two folders, {owner[r.char_id]} "
                f"and {where} (alphabet, character index, background). Use the official zip files."
            )
        if (r.char_id, r.drawer) in seen:
            raise DataIntegrityError(
                f"Omniglot image {r.char_id + 1:04d}_{r.drawer + 1:02d}.png appears twice. Use the "
                f"official zip files."
            )
        seen.add((r.char_id, r.drawer))

    records.sort(key=lambda r: (r.char_id, r.drawer))
    alphabet_names = sorted({r.alphabet for r in records})
    alphabet_index = {name: i for i, name in enumerate(alphabet_names)}
    arrays = {
        "images28": np.stack([r.image28 for r in records]).astype(np.uint8),
        "images105_packed": np.stack([r.packed105 for r in records]).astype(np.uint8),
        "alphabet": np.array([alphabet_index[r.alphabet] for r in records], dtype=np.int16),
        "alphabet_names": np.array(alphabet_names),
        "character": np.array([r.character for r in records], dtype=np.int16),
        "char_id": np.array([r.char_id for r in records], dtype=np.int16),
        "drawer": np.array([r.drawer for r in records], dtype=np.int8),
        "background": np.array([r.background for r in records], dtype=bool),
    }
    out_path = Path(out_path).expanduser()
    _write_npz_atomic(out_path, arrays)
    counts = {
        "images": len(records),
        "characters": len(owner),
        "background_characters": sum(1 for where in owner.values() if where[2]),
        "evaluation_characters": sum(1 for where in owner.values() if not where[2]),
        "alphabets": len(alphabet_names),
    }
    return {"path": str(out_path), **counts, "complete": counts == OMNIGLOT_COUNTS}


# --------------------------------------------------------------------------- MNIST, Fashion-MNIST

# IDX type codes (yann.lecun.com/exdb/mnist, "THE IDX FILE FORMAT"); all values are big-endian.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (gzip-compressed or not, recognised by its content) into an array.

    Raises:
        DataIntegrityError: the file is not a well-formed IDX file.
    """
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError) as exc:
        raise DataIntegrityError(f"{path} could not be read or decompressed ({exc}). Fetch it again.") from exc
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] not in _IDX_DTYPES:
        raise DataIntegrityError(
            f"{path} is not an IDX file (its first bytes are {raw[:4].hex()}, expected 0000 then a "
            f"type code and the number of dimensions). Use the official MNIST / Fashion-MNIST files."
        )
    ndim, header = raw[3], 4 + 4 * raw[3]
    if len(raw) < header:
        raise DataIntegrityError(f"{path} ends inside its IDX header. The file is truncated; fetch it again.")
    shape = tuple(int(v) for v in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataIntegrityError(
            f"{path} declares shape {shape} ({expected} bytes of data) but holds {len(raw) - header}. "
            f"The file is truncated or corrupted; fetch it again."
        )
    return np.frombuffer(raw, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def _find_idx(folder: Path, stem: str) -> Path:
    # The official .gz, its decompressed form, and the dotted name some mirrors use.
    names = [f"{stem}.gz", stem, stem.replace("-idx", ".idx"), f"{stem.replace('-idx', '.idx')}.gz"]
    for name in names:
        if (folder / name).is_file():
            return folder / name
    raise DataNotFoundError(
        f"Could not find the IDX file {stem} in {folder}; looked for {', '.join(names)}. Put the four "
        f"official files there ({', '.join(f + '.gz' for f in IDX_FILES.values())}), or run the command "
        f"without --from-files to download them."
    )


def convert_idx_files(folder: str | os.PathLike, out_path: str | os.PathLike,
                      class_names: Sequence[str] | None = None) -> dict:
    """Convert the four MNIST-style IDX files in ``folder`` into ``mnist.npz``-format arrays.

    Writes ``x_train``, ``y_train``, ``x_test``, ``y_test`` (uint8, images ``(n, 28, 28)``) and,
    when ``class_names`` is given, ``class_names``, atomically to ``out_path``.

    Args:
        folder: holds ``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte[.gz]``,
            ``t10k-images-idx3-ubyte[.gz]``, ``t10k-labels-idx1-ubyte[.gz]``.
        out_path: the ``.npz`` file to write.
        class_names: names of the classes (Fashion-MNIST); labels must index into them.

    Returns:
        A summary: ``path``, ``train`` and ``test`` (numbers of images) and ``complete`` (True
        for the official 60000 / 10000).

    Raises:
        DataNotFoundError: a file is missing.
        DataIntegrityError: a file is not IDX, images are not uint8 ``(n, 28, 28)``, labels are
            not uint8 ``(n,)`` in range, or images and labels disagree in number.

    References:
        LeCun, Bottou, Bengio & Haffner (1998); Xiao, Rasul & Vollgraf (2017).
    """
    folder = Path(folder).expanduser()
    num_classes = len(class_names) if class_names is not None else 10
    arrays = {key: read_idx(_find_idx(folder, stem)) for key, stem in IDX_FILES.items()}
    for split in ("train", "test"):
        images, labels = arrays[f"x_{split}"], arrays[f"y_{split}"]
        problems = []
        if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
            problems.append(f"images are {images.dtype} {images.shape}, expected uint8 (n, 28, 28)")
        if labels.dtype != np.uint8 or labels.ndim != 1:
            problems.append(f"labels are {labels.dtype} {labels.shape}, expected uint8 (n,)")
        elif labels.size and labels.max() >= num_classes:
            problems.append(f"a label is {labels.max()}, expected 0..{num_classes - 1}")
        if len(images) != len(labels):
            problems.append(f"{len(images)} images but {len(labels)} labels")
        if problems:
            raise DataIntegrityError(
                f"The {split} IDX files in {folder} do not form an MNIST-style split: {'; '.join(problems)}. "
                f"Use the official files."
            )
    if class_names is not None:
        arrays["class_names"] = np.array(list(class_names))
    out_path = Path(out_path).expanduser()
    _write_npz_atomic(out_path, arrays)
    counts = {"train": len(arrays["y_train"]), "test": len(arrays["y_test"])}
    return {"path": str(out_path), **counts, "complete": counts == MNIST_COUNTS}


# --------------------------------------------------------------------------- one call per dataset

def prepare_dataset(name: str, root: str | os.PathLike | None = None,
                    source_dir: str | os.PathLike | None = None, *,
                    sources: Sequence[RemoteFile] | None = None, timeout: float = 60.0,
                    progress: bool = False) -> dict:
    """Build ``<name>.npz`` in ``root`` from the official files, downloading them if needed.

    Without ``source_dir`` the official files are downloaded (verified by size, sha256 and md5)
    to ``root/downloads/<name>/`` and kept there, so a second run does not download again.
    With ``source_dir`` the files found there are converted and nothing is downloaded.

    Args:
        name: ``omniglot``, ``mnist`` or ``fashion_mnist``.
        root: the folder to write into; default :func:`autometa.data.cache_dir`
            (``~/.cache/autometa``), the last place the loaders look.
        source_dir: a folder holding the official files (Omniglot: ``images_background.zip``
            and ``images_evaluation.zip``; MNIST-like: the four IDX files, ``.gz`` or not).
        sources: the files to download instead of the official ones (tests, private mirrors).
        timeout: seconds to wait for a server.
        progress: show download progress bars.

    Returns:
        The conversion summary (see :func:`convert_omniglot_zips`, :func:`convert_idx_files`)
        with ``seconds`` added.

    Raises:
        ConfigError: unknown ``name``, or ``root`` is a file.
        DataNotFoundError: a source file is missing, or no download URL could be reached.
        DataIntegrityError: a download fails its checksums, or a file is malformed.
        BackendUnavailableError: Omniglot needs Pillow.

    Example:
        >>> prepare_dataset("mnist")  # doctest: +SKIP
        {'path': '/home/me/.cache/autometa/mnist.npz', 'train': 60000, 'test': 10000, ...}
    """
    if name not in SOURCES:
        raise ConfigError(f"Cannot prepare dataset {name!r}. Choose one of {list(DATASETS)}.")
    start = time.perf_counter()
    target = Path(root).expanduser() if root is not None else cache_dir()
    if target.is_file():
        raise ConfigError(f"root must be a folder to write {name}.npz into. Got the file {target}.")
    target.mkdir(parents=True, exist_ok=True)
    remotes = tuple(sources) if sources is not None else SOURCES[name]
    flag = "--from-zips" if name == "omniglot" else "--from-files"
    if source_dir is None:
        folder = target / "downloads" / name
        hint = (f"Or fetch the files by hand ({', '.join(r.name for r in remotes)}) and run "
                f"`autometa data {name} {flag} DIR`.")
        for remote in remotes:
            download(remote, folder, timeout=timeout, progress=progress, hint=hint)
    else:
        folder = Path(source_dir).expanduser()
        if not folder.is_dir():
            raise DataNotFoundError(f"{flag} needs a folder that holds the official files. Got {folder}, "
                                    f"which is not a folder.")
    out_path = target / f"{name}.npz"
    if name == "omniglot":
        zips = [folder / remote.name for remote in OMNIGLOT_FILES]
        missing = [str(z) for z in zips if not z.is_file()]
        if missing:
            raise DataNotFoundError(
                f"Could not find {', '.join(missing)}. Put the official images_background.zip and "
                f"images_evaluation.zip (github.com/brendenlake/omniglot, python/ folder) in {folder}, "
                f"or run `autometa data omniglot` without --from-zips to download them."
            )
        summary = convert_omniglot_zips(zips[0], zips[1], out_path)
    else:
        names = FASHION_MNIST_CLASS_NAMES if name == "fashion_mnist" else None
        summary = convert_idx_files(folder, out_path, class_names=names)
    return {**summary, "seconds": time.perf_counter() - start}


# --------------------------------------------------------------------------- command line

def add_data_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``data`` command to an ``argparse`` sub-parser group; it dispatches to :func:`run_data`.

    Usage: ``autometa data {omniglot,mnist,fashion_mnist} [--root DIR] [--from-zips DIR | --from-files DIR]``.
    The parser's defaults include ``func=run_data``.
    """
    parser = subparsers.add_parser(
        "data",
        help="download (verified) or convert a dataset into the .npz file autometa reads",
        description=(
            "Build NAME.npz from the official release. Without --from-zips/--from-files the files "
            "are downloaded and checked against their published sha256 and md5. Loaders look in "
            f"an explicit root, then ${ENV_VAR}, then ~/.cache/autometa."
        ),
    )
    parser.add_argument("dataset", choices=DATASETS, help="which dataset to build")
    parser.add_argument("--root", metavar="DIR",
                        help="folder to write NAME.npz into (default: ~/.cache/autometa, or "
                             "$XDG_CACHE_HOME/autometa)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--from-zips", metavar="DIR",
                        help="omniglot: convert images_background.zip and images_evaluation.zip "
                             "found in DIR instead of downloading")
    source.add_argument("--from-files", metavar="DIR",
                        help="mnist, fashion_mnist: convert the four IDX files (.gz or not) found "
                             "in DIR instead of downloading")
    parser.set_defaults(func=run_data)
    return parser


def run_data(args: argparse.Namespace) -> int:
    """Run ``autometa data`` for parsed arguments; print what was written. Returns exit code 0.

    Raises:
        ConfigError: a source flag that does not fit the dataset.
        AutometaError: whatever :func:`prepare_dataset` raises.
    """
    if args.dataset == "omniglot" and args.from_files:
        raise ConfigError("--from-files is for the IDX files of mnist and fashion_mnist. Got "
                          "omniglot; use --from-zips DIR with the two Omniglot zip files.")
    if args.dataset != "omniglot" and args.from_zips:
        raise ConfigError(f"--from-zips is for the Omniglot zip files. Got {args.dataset}; use "
                          f"--from-files DIR with the four IDX files.")
    summary = prepare_dataset(args.dataset, args.root, args.from_zips or args.from_files, progress=True)
    if args.dataset == "omniglot":
        official = OMNIGLOT_COUNTS
        counts = (f"{summary['images']} images, {summary['characters']} characters "
                  f"({summary['background_characters']} background + {summary['evaluation_characters']} "
                  f"evaluation), {summary['alphabets']} alphabets")
    else:
        official = MNIST_COUNTS
        counts = f"{summary['train']} train + {summary['test']} test images"
    print(f"Wrote {summary['path']}: {counts}, in {summary['seconds']:.1f} s.")
    if not summary["complete"]:
        print(f"Note: these are not the official counts ({official}); the files converted are not "
              f"the complete official release.")
    written = Path(summary["path"])
    env_dir = os.environ.get(ENV_VAR)
    if args.root is None and env_dir and (Path(env_dir).expanduser() / written.name).is_file():
        print(f"Note: ${ENV_VAR} is set and {Path(env_dir).expanduser() / written.name} exists; loaders "
              f"read that file before {written}. Unset ${ENV_VAR} or pass root= to use the new one.")
    return 0


def main_data(argv: Sequence[str] | None = None) -> int:
    """The ``data`` command on its own: parse ``argv``, run, print errors. Returns the exit code.

    Example:
        >>> main_data(["mnist", "--from-files", "raw/"])  # doctest: +SKIP
    """
    parser = argparse.ArgumentParser(prog="autometa")
    add_data_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["data", *(argv if argv is not None else sys.argv[1:])])
    try:
        return args.func(args)
    except AutometaError as exc:
        print(f"autometa data: error: {exc}", file=sys.stderr)
        return 2
