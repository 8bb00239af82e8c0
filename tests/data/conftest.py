"""Fixtures for the autometa.data tests: the offline data folder and the real Omniglot arrays."""

import os
from pathlib import Path

import numpy as np
import pytest

# Read once at import, before any test monkeypatches the variable.
SHARED_DATA = os.environ.get("AUTOMETA_DATA")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The offline data folder ($AUTOMETA_DATA); skips the test if the variable is unset."""
    if not SHARED_DATA:
        pytest.skip("AUTOMETA_DATA is unset: set it to the folder holding omniglot.npz, mnist.npz and "
                    "fashion_mnist.npz (../shared/data; CI sets it)")
    return Path(SHARED_DATA)


@pytest.fixture(scope="session")
def omniglot_arrays(shared_data) -> dict:
    """Every array of the real omniglot.npz, read once per test session."""
    with np.load(shared_data / "omniglot.npz") as archive:
        return {key: archive[key] for key in archive.files}


@pytest.fixture
def isolated_lookup(monkeypatch, tmp_path) -> Path:
    """No $AUTOMETA_DATA, and a cache folder inside tmp_path; returns that cache folder."""
    monkeypatch.delenv("AUTOMETA_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path / "xdg" / "autometa"
