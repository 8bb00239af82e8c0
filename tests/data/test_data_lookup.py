"""Where dataset files are looked for: explicit root, then $AUTOMETA_DATA, then the cache."""

from pathlib import Path

import numpy as np
import pytest

from autometa.data import cache_dir, candidate_dirs, find_file, load_mnist, load_omniglot
from autometa.errors import AutometaError, DataNotFoundError


def _tiny_mnist(folder: Path, fill: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    images = np.full((2, 28, 28), fill, np.uint8)
    labels = np.array([0, 1], np.uint8)
    np.savez_compressed(folder / "mnist.npz", x_train=images, y_train=labels, x_test=images, y_test=labels)


def test_cache_dir_uses_xdg_cache_home_then_home(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "autometa"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "autometa"


def test_candidate_dirs_are_root_then_env_then_cache(isolated_lookup, monkeypatch, tmp_path):
    assert candidate_dirs() == [isolated_lookup]
    monkeypatch.setenv("AUTOMETA_DATA", str(tmp_path / "env"))
    assert candidate_dirs() == [tmp_path / "env", isolated_lookup]
    assert candidate_dirs(tmp_path / "root") == [tmp_path / "root", tmp_path / "env", isolated_lookup]


def test_find_file_takes_the_first_folder_that_has_it(isolated_lookup, monkeypatch, tmp_path):
    root, env = tmp_path / "root", tmp_path / "env"
    for folder in (root, env, isolated_lookup):
        folder.mkdir(parents=True)
        (folder / "x.npz").write_bytes(b"x")
    monkeypatch.setenv("AUTOMETA_DATA", str(env))
    assert find_file("x.npz", root) == root / "x.npz"
    (root / "x.npz").unlink()
    assert find_file("x.npz", root) == env / "x.npz"
    (env / "x.npz").unlink()
    assert find_file("x.npz", root) == isolated_lookup / "x.npz"


def test_find_file_accepts_the_file_itself(isolated_lookup, tmp_path):
    path = tmp_path / "renamed.npz"
    path.write_bytes(b"x")
    assert find_file("omniglot.npz", path) == path


def test_missing_file_error_names_every_place_looked_and_the_remedy(isolated_lookup, monkeypatch, tmp_path):
    monkeypatch.setenv("AUTOMETA_DATA", str(tmp_path / "env"))
    with pytest.raises(DataNotFoundError) as info:
        find_file("x.npz", tmp_path / "root", "Run `make x`.")
    message = str(info.value)
    for folder in (tmp_path / "root", tmp_path / "env", isolated_lookup):
        assert str(folder / "x.npz") in message
    assert "Run `make x`." in message and "AUTOMETA_DATA" in message
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, AutometaError)


@pytest.mark.parametrize("loader, command", [(load_omniglot, "autometa data omniglot"),
                                             (load_mnist, "autometa data mnist")])
def test_loader_error_says_how_to_get_the_file(isolated_lookup, tmp_path, loader, command):
    with pytest.raises(DataNotFoundError, match=command) as info:
        loader(root=tmp_path / "empty")
    assert str(tmp_path / "empty") in str(info.value) and str(isolated_lookup) in str(info.value)


def test_loader_follows_the_lookup_order(isolated_lookup, monkeypatch, tmp_path):
    _tiny_mnist(isolated_lookup, fill=51)
    assert load_mnist().x.max() == pytest.approx(0.2)
    _tiny_mnist(tmp_path / "env", fill=102)
    monkeypatch.setenv("AUTOMETA_DATA", str(tmp_path / "env"))
    assert load_mnist().x.max() == pytest.approx(0.4)
    _tiny_mnist(tmp_path / "root", fill=153)
    dataset = load_mnist(root=tmp_path / "root")
    assert dataset.x.max() == pytest.approx(0.6)
    assert dataset.info["path"] == str(tmp_path / "root" / "mnist.npz")
