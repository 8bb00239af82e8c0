"""Acquisition: Omniglot zip and IDX conversion, verified atomic downloads (offline, file:// URLs), CLI."""

import argparse
import functools
import gzip
import hashlib
import http.server
import io
import re
import sys
import threading
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest

from autometa.data import (
    FASHION_MNIST_FILES,
    MNIST_FILES,
    OMNIGLOT_FILES,
    RemoteFile,
    add_data_parser,
    convert_idx_files,
    convert_omniglot_zips,
    download,
    file_digests,
    load_fashion_mnist,
    load_mnist,
    load_omniglot,
    main_data,
    prepare_dataset,
    read_idx,
    run_data,
)
from autometa.errors import BackendUnavailableError, ConfigError, DataIntegrityError, DataNotFoundError

Image = pytest.importorskip("PIL.Image", reason="the Omniglot conversion tests need Pillow")

# Real rows: two background alphabets (two characters and one), one evaluation alphabet (two
# characters), three drawings each, chosen out of order so the conversion has to sort them.
DRAWINGS = (19, 0, 7)


@pytest.fixture(scope="module")
def omniglot_rows(omniglot_arrays) -> np.ndarray:
    char_id, alphabet = omniglot_arrays["char_id"], omniglot_arrays["alphabet"]
    background = omniglot_arrays["background"]
    first_of = {a: np.unique(char_id[(alphabet == a)]) for a in np.unique(alphabet)}
    bg_alphabets = [a for a in first_of if background[char_id == first_of[a][0]][0]][:2]
    ev_alphabet = next(a for a in first_of if not background[char_id == first_of[a][0]][0])
    chars = [*first_of[bg_alphabets[0]][:2], first_of[bg_alphabets[1]][0], *first_of[ev_alphabet][-2:]]
    return np.array([c * 20 + d for c in chars for d in DRAWINGS])


def _png_bytes(bits: np.ndarray) -> bytes:
    image = Image.fromarray(bits)  # bool array -> mode "1", as the official PNGs
    assert image.mode == "1"
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _write_omniglot_zips(folder: Path, arrays: dict, rows: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    bits = np.unpackbits(arrays["images105_packed"][rows], axis=1, count=105 * 105)
    order = np.random.default_rng(0).permutation(len(rows))
    for top, is_background in (("images_background", True), ("images_evaluation", False)):
        with zipfile.ZipFile(folder / f"{top}.zip", "w") as archive:
            archive.writestr(f"{top}/", b"")  # folder entries, as zip tools write them
            archive.writestr(f"__MACOSX/{top}/._junk.png", b"not an image")
            for i in order:
                row = rows[i]
                if arrays["background"][row] != is_background:
                    continue
                name = (f"{top}/{arrays['alphabet_names'][arrays['alphabet'][row]]}/"
                        f"character{arrays['character'][row] + 1:02d}/"
                        f"{arrays['char_id'][row] + 1:04d}_{arrays['drawer'][row] + 1:02d}.png")
                archive.writestr(name, _png_bytes(bits[i].reshape(105, 105).astype(bool)))


@pytest.fixture(scope="module")
def omniglot_zips(tmp_path_factory, omniglot_arrays, omniglot_rows) -> Path:
    folder = tmp_path_factory.mktemp("omniglot_zips")
    _write_omniglot_zips(folder, omniglot_arrays, omniglot_rows)
    return folder


@pytest.fixture(scope="module")
def evaluation_zip(tmp_path_factory) -> Path:
    """A one-image zip in the official layout, made without the offline data."""
    path = tmp_path_factory.mktemp("tiny") / "images_evaluation.zip"
    bits = np.ones((105, 105), bool)
    bits[40:60, 50:53] = False  # a stroke of ink
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("images_evaluation/Angelic/character01/0965_01.png", _png_bytes(bits))
    return path


def _remote_for(path: Path, name: str | None = None, **override) -> RemoteFile:
    digests = file_digests(path)
    fields = {"name": name or path.name, "urls": (path.as_uri(),), **digests, **override}
    return RemoteFile(**fields)


# ----------------------------------------------------------------- Omniglot zip conversion

def test_omniglot_conversion_reproduces_the_source_rows(tmp_path, omniglot_zips, omniglot_arrays,
                                                        omniglot_rows):
    summary = convert_omniglot_zips(omniglot_zips / "images_background.zip",
                                    omniglot_zips / "images_evaluation.zip", tmp_path / "o.npz")
    expected_rows = np.sort(omniglot_rows)  # the format orders by char_id, then drawer
    assert summary["images"] == 15 and summary["characters"] == 5 and summary["alphabets"] == 3
    assert (summary["background_characters"], summary["evaluation_characters"]) == (3, 2)
    assert summary["complete"] is False
    with np.load(tmp_path / "o.npz") as archive:
        converted = {key: archive[key] for key in archive.files}
    assert set(converted) == set(omniglot_arrays)
    for key in ("images28", "images105_packed", "character", "char_id", "drawer", "background"):
        assert converted[key].dtype == omniglot_arrays[key].dtype, key
        np.testing.assert_array_equal(converted[key], omniglot_arrays[key][expected_rows], err_msg=key)
    # 105x105 bit-exact, and 28x28 equal to the offline file, which the README's recipe made.
    names = converted["alphabet_names"]
    assert names.dtype.kind == "U" and list(names) == sorted(names)
    assert converted["alphabet"].dtype == np.int16
    np.testing.assert_array_equal(names[converted["alphabet"]],
                                  omniglot_arrays["alphabet_names"][omniglot_arrays["alphabet"][expected_rows]])


def test_omniglot_28_follows_the_lanczos_recipe(tmp_path, omniglot_zips):
    convert_omniglot_zips(omniglot_zips / "images_background.zip",
                          omniglot_zips / "images_evaluation.zip", tmp_path / "o.npz")
    with np.load(tmp_path / "o.npz") as archive:
        small, packed = archive["images28"], archive["images105_packed"]
    bits = np.unpackbits(packed, axis=1, count=105 * 105).reshape(-1, 105, 105)
    for big, got in zip(bits, small):
        gray = Image.fromarray((big * 255).astype(np.uint8))  # 8-bit grayscale, paper 255
        recipe = np.asarray(gray.resize((28, 28), Image.Resampling.LANCZOS))
        np.testing.assert_array_equal(got, recipe)
    # Antialiased: grey levels appear, which a nearest-neighbour or binary resize would not give.
    assert len(np.unique(small)) > 10


def test_converted_omniglot_loads_with_ink_one(tmp_path, omniglot_zips, omniglot_arrays, omniglot_rows):
    convert_omniglot_zips(omniglot_zips / "images_background.zip",
                          omniglot_zips / "images_evaluation.zip", tmp_path / "omniglot.npz")
    dataset = load_omniglot(tmp_path, size=105, background=False)
    rows = np.sort(omniglot_rows)[~omniglot_arrays["background"][np.sort(omniglot_rows)]]
    bits = np.unpackbits(omniglot_arrays["images105_packed"][rows], axis=1, count=105 * 105)
    np.testing.assert_array_equal(dataset.x.reshape(len(rows), -1), 1 - bits)


def _zip_with(path: Path, entries: dict) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return path


@pytest.mark.parametrize("entries, match", [
    ({"images_background/Latin/char01/0683_01.png": b""}, "does not follow the Omniglot layout"),
    ({"images_background/Latin/character01/0683-01.png": b""}, "does not follow the Omniglot layout"),
    ({"images_background/Latin/character1/0683_01.png": b""}, "does not follow the Omniglot layout"),
    ({"images_background/Latin/character01/0000_01.png": b""}, "has a number 0"),
    ({"images_background/Latin/character01/0683_01.png": b"not a png"}, "could not be read as a PNG"),
    ({"images_background/readme.txt": b"hi"}, "holds no Omniglot PNG images"),
])
def test_omniglot_zip_with_bad_content_is_rejected(tmp_path, evaluation_zip, entries, match):
    bad = _zip_with(tmp_path / "bad.zip", entries)
    with pytest.raises(DataIntegrityError, match=match):
        convert_omniglot_zips(bad, evaluation_zip, tmp_path / "o.npz")
    assert not (tmp_path / "o.npz").exists()


def test_omniglot_image_checks_size_and_binary(tmp_path, evaluation_zip):
    small = io.BytesIO()
    Image.new("1", (28, 28), 1).save(small, format="PNG")
    gray = io.BytesIO()
    Image.new("L", (105, 105), 128).save(gray, format="PNG")
    for data, match in ((small.getvalue(), "is 28x28 pixels"), (gray.getvalue(), "not a black-and-white")):
        bad = _zip_with(tmp_path / "bad.zip", {"images_background/Latin/character01/0683_01.png": data})
        with pytest.raises(DataIntegrityError, match=match):
            convert_omniglot_zips(bad, evaluation_zip, tmp_path / "o.npz")


def test_omniglot_ids_must_be_consistent(tmp_path):
    png = _png_bytes(np.ones((105, 105), bool))
    same_id_twice = {"images_background/Latin/character01/0683_01.png": png,
                     "images_background/Latin/character02/0683_02.png": png}
    same_drawing_twice = {"images_background/Latin/character01/0683_01.png": png,
                          "images_background/Copy/Latin/character01/0683_01.png": png}
    evaluation = _zip_with(tmp_path / "ev.zip", {"images_evaluation/Angelic/character01/0965_01.png": png})
    for entries, match in ((same_id_twice, "appears in two folders"), (same_drawing_twice, "appears twice")):
        bad = _zip_with(tmp_path / "bad.zip", entries)
        with pytest.raises(DataIntegrityError, match=match):
            convert_omniglot_zips(bad, evaluation, tmp_path / "o.npz")


def test_not_a_zip_file_is_rejected(tmp_path, evaluation_zip):
    (tmp_path / "images_background.zip").write_bytes(b"<html>rate limited</html>")
    with pytest.raises(DataIntegrityError, match="could not be opened as a zip file"):
        convert_omniglot_zips(tmp_path / "images_background.zip", evaluation_zip, tmp_path / "o.npz")


def test_missing_pillow_says_how_to_install_it(tmp_path, evaluation_zip, monkeypatch):
    monkeypatch.setitem(sys.modules, "PIL", None)  # makes `from PIL import Image` fail
    with pytest.raises(BackendUnavailableError, match="pip install Pillow") as info:
        convert_omniglot_zips(evaluation_zip, evaluation_zip, tmp_path / "o.npz")
    assert isinstance(info.value, ImportError)


# ----------------------------------------------------------------- IDX conversion

def _idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, ">u4").tobytes()
    return header + array.astype(np.uint8).tobytes()


def _write_idx_folder(folder: Path, seed: int = 0, compress=(True, False, True, False)) -> dict:
    rng = np.random.default_rng(seed)
    arrays = {"x_train": rng.integers(0, 256, (5, 28, 28), dtype=np.uint8),
              "y_train": rng.integers(0, 10, 5, dtype=np.uint8),
              "x_test": rng.integers(0, 256, (3, 28, 28), dtype=np.uint8),
              "y_test": rng.integers(0, 10, 3, dtype=np.uint8)}
    stems = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
             "t10k-labels-idx1-ubyte")
    folder.mkdir(parents=True, exist_ok=True)
    for (_key, array), stem, gz in zip(arrays.items(), stems, compress):
        data = _idx_bytes(array)
        if gz:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / stem).write_bytes(data)
    return arrays


def test_idx_round_trip_gz_and_plain(tmp_path):
    arrays = _write_idx_folder(tmp_path / "raw")
    summary = convert_idx_files(tmp_path / "raw", tmp_path / "mnist.npz")
    assert (summary["train"], summary["test"], summary["complete"]) == (5, 3, False)
    with np.load(tmp_path / "mnist.npz") as archive:
        assert sorted(archive.files) == sorted(arrays)
        for key, array in arrays.items():
            assert archive[key].dtype == np.uint8
            np.testing.assert_array_equal(archive[key], array)
    dataset = load_mnist(tmp_path, train=False)
    np.testing.assert_array_equal(dataset.x[:, 0], arrays["x_test"] / np.float32(255))
    np.testing.assert_array_equal(dataset.y, arrays["y_test"])


def test_read_idx_gives_the_same_array_compressed_or_not(tmp_path):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a").write_bytes(_idx_bytes(array))
    (tmp_path / "b").write_bytes(gzip.compress(_idx_bytes(array)))
    np.testing.assert_array_equal(read_idx(tmp_path / "a"), array)
    np.testing.assert_array_equal(read_idx(tmp_path / "b"), array)


def test_read_idx_rejects_bad_files(tmp_path):
    good = _idx_bytes(np.zeros((2, 28, 28), np.uint8))
    for data, match in ((b"PK\x03\x04junk", "is not an IDX file"), (good[:-5], "truncated"),
                        (good[:10], "ends inside its IDX header"), (good[:100][:2] + b"\x01\x03", "not an IDX")):
        (tmp_path / "f").write_bytes(data)
        with pytest.raises(DataIntegrityError, match=match):
            read_idx(tmp_path / "f")


def test_idx_splits_must_be_consistent(tmp_path):
    _write_idx_folder(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx_bytes(np.zeros(4, np.uint8)))
    with pytest.raises(DataIntegrityError, match="3 images but 4 labels"):
        convert_idx_files(tmp_path, tmp_path / "m.npz")
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx_bytes(np.array([0, 1, 10], np.uint8)))
    with pytest.raises(DataIntegrityError, match="a label is 10"):
        convert_idx_files(tmp_path, tmp_path / "m.npz")
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(np.zeros((3, 8, 8)))))
    with pytest.raises(DataIntegrityError, match=r"expected uint8 \(n, 28, 28\)"):
        convert_idx_files(tmp_path, tmp_path / "m.npz")
    assert not (tmp_path / "m.npz").exists()


def test_idx_missing_file_names_what_to_put_where(tmp_path):
    _write_idx_folder(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte").unlink()
    with pytest.raises(DataNotFoundError, match="train-labels-idx1-ubyte.gz, train-labels-idx1-ubyte,"):
        convert_idx_files(tmp_path, tmp_path / "m.npz")


# ----------------------------------------------------------------- downloads (file:// URLs)

def _no_partial_files(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.endswith(".part")]


def test_download_verifies_and_places_the_file(tmp_path, evaluation_zip):
    source = evaluation_zip
    path = download(_remote_for(source), tmp_path / "dl")
    assert path == tmp_path / "dl" / "images_evaluation.zip"
    assert path.read_bytes() == source.read_bytes() and _no_partial_files(path.parent)


def test_download_checksum_mismatch_keeps_nothing(tmp_path, evaluation_zip):
    source = evaluation_zip
    wrong = _remote_for(source, sha256=hashlib.sha256(b"other").hexdigest())
    with pytest.raises(DataIntegrityError, match="not the official images_evaluation.zip: sha256") as info:
        download(wrong, tmp_path, hint="Or run `autometa data omniglot --from-zips DIR`.")
    assert "It was not kept" in str(info.value) and "--from-zips DIR" in str(info.value)
    assert list(tmp_path.iterdir()) == []
    too_small = _remote_for(source, size=100)
    with pytest.raises(DataIntegrityError, match="more than the expected 100 bytes"):
        download(too_small, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_download_md5_is_checked_too(tmp_path, evaluation_zip):
    wrong = _remote_for(evaluation_zip, md5="0" * 32)
    with pytest.raises(DataIntegrityError, match="md5"):
        download(wrong, tmp_path)


def test_download_skips_a_verified_file_and_replaces_a_bad_one(tmp_path, evaluation_zip):
    source = evaluation_zip
    offline = _remote_for(source, urls=((tmp_path / "nowhere.zip").as_uri(),))
    (tmp_path / source.name).write_bytes(source.read_bytes())
    assert download(offline, tmp_path).read_bytes() == source.read_bytes()  # no network needed
    (tmp_path / source.name).write_bytes(b"half a file")
    assert download(_remote_for(source), tmp_path).read_bytes() == source.read_bytes()


def test_download_tries_mirrors_and_reports_every_failure(tmp_path, evaluation_zip):
    source = evaluation_zip
    dead = (tmp_path / "dead1.zip").as_uri()
    mirrored = _remote_for(source, urls=(dead, source.as_uri()))
    assert download(mirrored, tmp_path / "a").read_bytes() == source.read_bytes()
    unreachable = _remote_for(source, urls=(dead, (tmp_path / "dead2.zip").as_uri()))
    with pytest.raises(DataNotFoundError, match=r"Could not download images_evaluation.zip; tried .*dead1.*dead2"):
        download(unreachable, tmp_path / "b", hint="Or pass --from-zips DIR.")
    assert not (tmp_path / "b" / source.name).exists()


def test_download_over_http_from_a_local_server(tmp_path, evaluation_zip):
    """The same code path as the real hosts: HTTP, a 404 on the first mirror, then the file."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(evaluation_zip.parent))
    handler.func.log_message = lambda *args: None  # keep the test output quiet
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}/"
        remote = _remote_for(evaluation_zip, urls=(base + "missing/images_evaluation.zip",
                                                   base + "images_evaluation.zip"))
        assert download(remote, tmp_path, timeout=10).read_bytes() == evaluation_zip.read_bytes()
        only_missing = _remote_for(evaluation_zip, urls=(base + "missing/images_evaluation.zip",))
        with pytest.raises(DataNotFoundError, match="missing/images_evaluation.zip \\(HTTP 404 "):
            download(only_missing, tmp_path / "other", timeout=10)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class _BrokenStream:
    """A response that delivers one chunk and then fails, as a cut connection does."""

    def __init__(self, error: BaseException):
        self.error, self.sent = error, False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def read(self, size: int) -> bytes:
        if self.sent:
            raise self.error
        self.sent = True
        return b"x" * 10


@pytest.mark.parametrize("error", [ConnectionResetError("reset by peer"), KeyboardInterrupt()])
def test_interrupted_download_leaves_no_partial_file(tmp_path, evaluation_zip, monkeypatch, error):
    monkeypatch.setattr(urllib.request, "urlopen", lambda request, timeout: _BrokenStream(error))
    remote = _remote_for(evaluation_zip)
    with pytest.raises(DataNotFoundError if isinstance(error, OSError) else KeyboardInterrupt):
        download(remote, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_official_sources_are_well_formed():
    for remote in (*OMNIGLOT_FILES, *MNIST_FILES, *FASHION_MNIST_FILES):
        assert re.fullmatch(r"[0-9a-f]{64}", remote.sha256) and re.fullmatch(r"[0-9a-f]{32}", remote.md5)
        assert remote.size > 0 and len(remote.urls) >= 2
        for url in remote.urls:
            assert url.endswith("/" + remote.name)
            assert url.startswith(("https://", "http://fashion-mnist.s3-website"))
    assert [r.name for r in OMNIGLOT_FILES] == ["images_background.zip", "images_evaluation.zip"]
    assert all("brendenlake/omniglot" in url for r in OMNIGLOT_FILES for url in r.urls)
    assert [r.name for r in MNIST_FILES] == [r.name for r in FASHION_MNIST_FILES]


# ----------------------------------------------------------------- one call per dataset, CLI

def test_prepare_omniglot_downloads_then_converts(tmp_path, omniglot_zips, omniglot_arrays, omniglot_rows):
    sources = [_remote_for(omniglot_zips / r.name) for r in OMNIGLOT_FILES]
    summary = prepare_dataset("omniglot", tmp_path / "data", sources=sources)
    assert summary["path"] == str(tmp_path / "data" / "omniglot.npz") and summary["images"] == 15
    assert (tmp_path / "data" / "downloads" / "omniglot" / "images_evaluation.zip").is_file()
    dataset = load_omniglot(tmp_path / "data")
    np.testing.assert_array_equal(dataset.y, omniglot_arrays["char_id"][np.sort(omniglot_rows)])


def test_prepare_defaults_to_the_cache_folder(tmp_path, isolated_lookup):
    arrays = _write_idx_folder(tmp_path / "raw")
    summary = prepare_dataset("fashion_mnist", source_dir=tmp_path / "raw")
    assert summary["path"] == str(isolated_lookup / "fashion_mnist.npz")
    dataset = load_fashion_mnist()  # found through the lookup order's last place
    assert dataset.class_names[0] == "T-shirt/top" and len(dataset.class_names) == 10
    np.testing.assert_array_equal(dataset.y, arrays["y_train"])


def test_prepare_rejects_bad_arguments(tmp_path):
    with pytest.raises(ConfigError, match="Choose one of"):
        prepare_dataset("cifar10", tmp_path)
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(ConfigError, match="root must be a folder"):
        prepare_dataset("mnist", tmp_path / "file", tmp_path)
    with pytest.raises(DataNotFoundError, match="images_background.zip.*images_evaluation.zip"):
        prepare_dataset("omniglot", tmp_path / "out", source_dir=tmp_path)
    with pytest.raises(DataNotFoundError, match="not a folder"):
        prepare_dataset("mnist", tmp_path / "out", source_dir=tmp_path / "missing")


def test_cli_converts_from_zips(tmp_path, omniglot_zips, capsys, isolated_lookup):
    assert main_data(["omniglot", "--root", str(tmp_path), "--from-zips", str(omniglot_zips)]) == 0
    out = capsys.readouterr().out
    assert f"Wrote {tmp_path / 'omniglot.npz'}: 15 images, 5 characters (3 background + 2 evaluation)" in out
    assert "not the official counts" in out and (tmp_path / "omniglot.npz").is_file()


def test_cli_wired_into_a_parent_parser(tmp_path, capsys, isolated_lookup, monkeypatch):
    _write_idx_folder(tmp_path / "raw")
    parser = argparse.ArgumentParser(prog="autometa")
    add_data_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["data", "mnist", "--from-files", str(tmp_path / "raw")])
    assert args.func is run_data and args.root is None
    monkeypatch.setenv("AUTOMETA_DATA", str(tmp_path / "raw"))
    (tmp_path / "raw" / "mnist.npz").write_bytes(b"older copy")
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert str(isolated_lookup / "mnist.npz") in out and "5 train + 3 test images" in out
    assert "loaders read that file before" in out  # $AUTOMETA_DATA shadows the new file


@pytest.mark.parametrize("argv, match", [
    (["omniglot", "--from-files", "x"], "use --from-zips DIR"),
    (["mnist", "--from-zips", "x"], "use --from-files DIR"),
])
def test_cli_reports_misused_flags(argv, match, capsys):
    assert main_data(argv) == 2
    assert re.search(match, capsys.readouterr().err)


def test_cli_rejects_both_sources_at_once(capsys):
    with pytest.raises(SystemExit) as info:
        main_data(["mnist", "--from-zips", "a", "--from-files", "b"])
    assert info.value.code == 2 and "not allowed with" in capsys.readouterr().err


@pytest.mark.slow
def test_full_size_omniglot_zips_convert_back_to_the_offline_file(tmp_path, omniglot_arrays, capsys):
    """All 32460 images written in the official layout convert back to every array, bit-exactly."""
    _write_omniglot_zips(tmp_path / "zips", omniglot_arrays, np.arange(len(omniglot_arrays["char_id"])))
    assert main_data(["omniglot", "--root", str(tmp_path), "--from-zips", str(tmp_path / "zips")]) == 0
    assert "32460 images, 1623 characters (964 background + 659 evaluation), 50 alphabets" in (
        capsys.readouterr().out)
    with np.load(tmp_path / "omniglot.npz") as archive:
        assert sorted(archive.files) == sorted(omniglot_arrays)
        for key, expected in omniglot_arrays.items():
            assert archive[key].dtype == expected.dtype, key
            np.testing.assert_array_equal(archive[key], expected, err_msg=key)
