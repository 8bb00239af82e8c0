"""Where dataset files are looked for: an explicit path, then ``$AUTOMETA_DATA``, then the cache."""

from __future__ import annotations

import os
from pathlib import Path

from autometa.errors import DataNotFoundError

ENV_VAR = "AUTOMETA_DATA"


def cache_dir() -> Path:
    """The default data folder, ``~/.cache/autometa`` (``$XDG_CACHE_HOME/autometa`` if set)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "autometa"


def candidate_dirs(root: str | os.PathLike | None = None) -> list[Path]:
    """The folders searched, in order."""
    dirs = []
    if root is not None:
        dirs.append(Path(root).expanduser())
    if os.environ.get(ENV_VAR):
        dirs.append(Path(os.environ[ENV_VAR]).expanduser())
    dirs.append(cache_dir())
    return dirs


def find_file(filename: str, root: str | os.PathLike | None = None, how_to_get: str = "") -> Path:
    """Return the first existing ``filename`` in :func:`candidate_dirs`.

    ``root`` may also be the file itself. Raises :class:`DataNotFoundError` naming every place
    looked at and ``how_to_get`` the file.
    """
    if root is not None and Path(root).expanduser().is_file():
        return Path(root).expanduser()
    looked = []
    for d in candidate_dirs(root):
        path = d / filename
        looked.append(str(path))
        if path.is_file():
            return path
    raise DataNotFoundError(
        f"Could not find {filename!r}. Looked in: {', '.join(looked)}. "
        f"{how_to_get} Or pass the folder that holds it as `root=` or set ${ENV_VAR}."
    )
