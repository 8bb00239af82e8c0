"""Searched meta-knowledge: one search API over Optuna (default), Ray Tune and NNI.

``autometa.search(objective_or_config, space, backend=...)`` runs a search and returns a
:class:`SearchResult`; inside an objective, one :class:`Trial` serves every backend. Search
spaces are data (:func:`parse_space`, :func:`load_space`, YAML files; those in
``autometa/search_spaces/`` ship with the package and load by name, e.g. ``"maml_sinusoid"``).
Optuna, Ray and NNI are imported only by their backend modules, when a search uses them.

This package is also callable: ``autometa.search(...)`` is :func:`search`.

Example::

    import autometa

    def objective(trial):
        return (trial.params["x"] - 2) ** 2

    result = autometa.search(objective, {"x": {"float": [-10, 10]}}, n_trials=20)
    print(result.best_params)
"""

import sys
import types

from autometa.search._api import BACKENDS, ExperimentObjective, search
from autometa.search._common import TrialPruned
from autometa.search._result import SearchResult, TrialRecord
from autometa.search._space import Param, SearchSpace, apply_params, load_space, parse_space
from autometa.search._trial import Trial

__all__ = [
    "BACKENDS", "ExperimentObjective", "Param", "SearchResult", "SearchSpace", "Trial", "TrialPruned",
    "TrialRecord", "apply_params", "load_space", "parse_space", "search",
]


class _CallableModule(types.ModuleType):
    """Lets ``autometa.search(...)`` call :func:`search` although ``autometa.search`` is this package."""

    def __call__(self, *args, **kwargs):
        return search(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
