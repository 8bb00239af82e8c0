"""autometa: meta-learning as AutoML.

The parts of a learning algorithm that people hand-craft (optimizer, initialization, ...)
become meta-knowledge that is searched or learned, and compared with the hand-crafted rule.

``import autometa`` needs only torch, numpy and pyyaml; Optuna, Ray and NNI are imported
lazily by the search backends that use them. ``autometa.compare(...)`` and
``autometa.search(...)`` load their modules on first use.
"""

import importlib
import os

# OpenMP threads that spin while waiting burn the CPU of whatever else runs on a shared machine
# (measured: 7.8 vs 57.5 CPU-s for the same work, NOTES.md). It only takes effect if set before
# torch loads OpenMP, which is the case for the `autometa` command and for scripts that import
# autometa first; an explicit setting by the user wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from autometa.errors import AutometaError

__version__ = "0.1.0"
__all__ = ["AutometaError", "__version__", "compare", "search"]


def __getattr__(name):
    if name == "compare":
        return importlib.import_module("autometa.compare")  # a callable module: autometa.compare(...)
    if name == "search":
        return importlib.import_module("autometa.search")  # a callable module: autometa.search(...)
    raise AttributeError(f"module 'autometa' has no attribute {name!r}")
