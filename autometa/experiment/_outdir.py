"""Results directories that know their kind and owner, so nothing is overwritten silently.

Every command that writes results (``run``, ``sweep``, ``compare``) claims its directory with
:func:`claim_out_dir` before writing anything. The claim is a small ``autometa.json`` marker
naming the kind; a directory of another kind, a file, or a directory that already holds
results is refused unless the caller resumes (same kind) or asks to overwrite.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from autometa.errors import ResultsDirError

MARKER = "autometa.json"
KINDS = ("run", "sweep", "compare")
# directories written before markers existed are recognised by their files
_LEGACY = {"run": ("metrics.jsonl", "checkpoints"), "sweep": ("sweep.json", "trials.csv", "study.db"),
           "compare": ("compare.yaml", "report.md", "report.json")}


def out_dir_kind(path: str | os.PathLike) -> str | None:
    """The kind of results directory ``path`` is (``run``, ``sweep``, ``compare``), or None."""
    path = Path(path)
    marker = path / MARKER
    if marker.is_file():
        try:
            return json.loads(marker.read_text()).get("kind")
        except (OSError, ValueError):
            return None
    for kind, names in _LEGACY.items():
        if any((path / n).exists() for n in names):
            return kind
    return None


def claim_out_dir(path: str | os.PathLike, kind: str, resume: bool = False, overwrite: bool = False) -> Path:
    """Create or re-open ``path`` as a results directory of ``kind``.

    Args:
        path: the directory.
        kind: ``"run"``, ``"sweep"`` or ``"compare"``.
        resume: the caller continues the results already there (same kind only).
        overwrite: delete what the directory holds first (same kind or an unmarked directory;
            never another kind's results).

    Returns:
        The directory, existing and marked as ``kind``.

    Raises:
        ResultsDirError: ``path`` is a file, belongs to another kind, or holds results while
            neither ``resume`` nor ``overwrite`` is set; the message says what to pass instead.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}. Got {kind!r}.")
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ResultsDirError(f"--out {str(path)!r} is a file, not a directory. Choose a directory path.")
    found = out_dir_kind(path) if path.is_dir() else None
    contents = [p for p in path.iterdir() if p.name != MARKER] if path.is_dir() else []
    if found is not None and found != kind:
        raise ResultsDirError(f"--out {str(path)!r} holds the results of `autometa {found}`, not of "
                              f"`autometa {kind}`. Choose another directory.")
    if contents and not resume:
        if not overwrite:
            what = f"the results of an earlier `autometa {kind}`" if found else f"{len(contents)} other file(s)"
            raise ResultsDirError(f"--out {str(path)!r} already holds {what}. Pass --resume to continue them, "
                                  f"--overwrite to delete them first, or choose another directory.")
        for item in contents:  # explicit --overwrite: the only deletion autometa does
            shutil.rmtree(item) if item.is_dir() and not item.is_symlink() else item.unlink()
    elif resume and found is None and contents:
        raise ResultsDirError(f"--out {str(path)!r} holds files but no autometa {kind} to resume. "
                              f"Choose the directory that an earlier `autometa {kind}` wrote.")
    path.mkdir(parents=True, exist_ok=True)
    marker = path / MARKER
    if not marker.exists():
        tmp = marker.with_suffix(".tmp")
        tmp.write_text(json.dumps({"kind": kind, "created": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n")
        os.replace(tmp, marker)
    return path
