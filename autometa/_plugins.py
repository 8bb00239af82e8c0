"""User modules imported by path before a command runs: ``--plugin examples/clipped_sgd.py``.

A plugin is a Python file that registers components (``register_filler``, ``register_learner``)
at import time. The command line imports each ``--plugin`` before it reads the config, and the
worker processes of ``autometa compare`` import the same files before they build anything, so a
filler written outside autometa works with ``run``, ``sweep`` and ``compare`` unchanged.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from pathlib import Path

from autometa.errors import ConfigError

_LOADED: dict[str, str] = {}  # absolute path -> module name


def load_plugin(path: str | os.PathLike):
    """Import the Python file at ``path`` once (later calls return the same module).

    Raises:
        ConfigError: the file does not exist, is not a ``.py`` file, or fails while it is imported.
    """
    resolved = Path(path).expanduser().resolve()
    if not resolved.is_file() or resolved.suffix != ".py":
        raise ConfigError(f"--plugin needs the path of a Python file that registers components "
                          f"(e.g. examples/clipped_sgd.py). Got {str(path)!r}, which is not a .py file.")
    key = str(resolved)
    if key in _LOADED:
        return sys.modules[_LOADED[key]]
    name = f"autometa_plugin_{resolved.stem}_{hashlib.sha1(key.encode()).hexdigest()[:8]}"
    spec = importlib.util.spec_from_file_location(name, resolved)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before executing: dataclasses and pickling look the module up
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        where = f" (line {exc.lineno})" if isinstance(exc, SyntaxError) else ""
        raise ConfigError(f"The plugin {str(path)!r} failed while being imported{where}: {type(exc).__name__}: "
                          f"{exc}. Fix the file, or run without --plugin.") from exc
    except BaseException:
        del sys.modules[name]
        raise
    _LOADED[key] = name
    return module


def loaded_plugins() -> list[str]:
    """The absolute paths of the plugins imported so far (for worker processes to import too)."""
    return list(_LOADED)
