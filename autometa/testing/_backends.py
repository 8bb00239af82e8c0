"""``check_backend``: the conformance checks every search backend of ``autometa.search`` passes.

Like Optuna's ``optuna.testing`` sampler suites, the checks ship with the package so that a
backend is tested by one line (``check_backend("ray")``). Each check runs a tiny objective
(no training) through :func:`autometa.search` and raises ``AssertionError`` naming what
differs from the contract. This module is self-contained: it imports only ``autometa.search``
and ``autometa.errors``.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

SPACE = {"x": {"float": [-2.0, 2.0]}, "n": {"int": [0, 3]}, "act": {"choice": ["relu", "tanh"]}}
STATES = ("complete", "pruned", "failed")


class _Objective:
    """A picklable objective (Ray runs it in worker processes) with one outcome per trial number mod 4.

    0, 1: complete, value ``(x - 1)^2 + n``, three reports; 2: pruned after two reports;
    3: fails with ``RuntimeError("planned failure")``. Every call is logged to ``log`` (a file),
    so that calls made in other processes are counted too.
    """

    def __init__(self, log: str):
        self.log = log

    def __call__(self, trial):
        from autometa.search import TrialPruned

        with open(self.log, "a") as handle:
            handle.write(f"{trial.number}\n")
        value = (trial.params["x"] - 1.0) ** 2 + trial.params["n"]
        kind = trial.number % 4
        for step in range(2 if kind == 2 else 3):
            trial.report(value + 1.0 / (step + 1), step)
        if kind == 2:
            raise TrialPruned("planned")
        if kind == 3:
            raise RuntimeError("planned failure")
        trial.set_user_attr("kind", kind)
        return value


def _calls(log: Path) -> list[int]:
    return [int(n) for n in log.read_text().split()] if log.exists() else []


def _check(condition: bool, what: str) -> None:
    if not condition:
        raise AssertionError(what)


def _search(name: str, objective, **kwargs):
    import autometa.search

    return autometa.search(objective, SPACE, backend=name, sampler="random", seed=3, **kwargs)


def check_result_format(name: str, result, calls: list[int], n_trials: int) -> None:
    """Trials numbered from 0, parameters in the space, states, values, errors and files as the contract says."""
    from autometa.search import SearchResult

    numbers = [t.number for t in result.trials]
    _check(result.backend == name, f"result.backend is {result.backend!r}, not {name!r}")
    _check(numbers == list(range(n_trials)), f"trial numbers {numbers}, expected 0..{n_trials - 1}")
    _check(sorted(calls) == numbers, f"the objective ran for trials {sorted(calls)}, expected each once: {numbers}")
    for t in result.trials:
        p = t.params
        _check(set(p) == set(SPACE), f"trial {t.number} has parameters {sorted(p)}, expected {sorted(SPACE)}")
        _check(isinstance(p["x"], float) and -2.0 <= p["x"] <= 2.0, f"trial {t.number}: x={p['x']!r} out of space")
        _check(isinstance(p["n"], int) and 0 <= p["n"] <= 3, f"trial {t.number}: n={p['n']!r} not an int in [0, 3]")
        _check(p["act"] in ("relu", "tanh"), f"trial {t.number}: act={p['act']!r} not a choice")
        _check(t.state in STATES, f"trial {t.number} has state {t.state!r}")
        value = (p["x"] - 1.0) ** 2 + p["n"]
        kind = t.number % 4
        if kind in (0, 1):
            _check(t.state == "complete" and t.values is not None and math.isclose(t.value, value, rel_tol=1e-9),
                   f"trial {t.number} should be complete with value {value}: {t}")
            _check(t.user_attrs.get("kind") == kind, f"trial {t.number} lost its user attribute: {t.user_attrs}")
            _check(sorted(t.intermediate) == [0, 1, 2] or name == "optuna" and result.multi_objective,
                   f"trial {t.number} has intermediate values {t.intermediate}, expected steps 0, 1, 2")
        elif kind == 2:
            _check(t.state == "pruned", f"trial {t.number} raised TrialPruned but is {t.state!r}")
            _check(t.values is not None and math.isclose(t.value, value + 0.5, rel_tol=1e-9),
                   f"pruned trial {t.number} should keep its last report {value + 0.5}: {t.values}")
        else:
            _check(t.state == "failed" and t.values is None, f"trial {t.number} raised but is {t.state!r}")
            _check(t.error == "RuntimeError: planned failure", f"failed trial {t.number} has error {t.error!r}")
    best = min((t for t in result.trials if t.state == "complete"), key=lambda t: (t.value, t.number))
    _check(result.best_trial.number == best.number, f"best_trial is {result.best_trial.number}, not {best.number}")
    with tempfile.TemporaryDirectory() as folder:
        files = result.write(folder)
        _check({"sweep", "trials"} <= set(files), f"write() made {sorted(files)}")
        loaded = SearchResult.load(files["sweep"])
        _check([t.to_dict() for t in loaded.trials] == [json.loads(json.dumps(t.to_dict(), default=str))
                                                       for t in result.trials], "sweep.json does not round-trip")


def check_backend(name: str, folder: str | Path | None = None) -> None:
    """Run the conformance checks of search backend ``name`` (``optuna``, ``ray``, ``nni``).

    Checks: one result format (numbers, parameters in the space, values, intermediate
    reports, user attributes, ``sweep.json`` round trip); pruned and failed trials recorded
    with their last value and error; a diverging trial (``NumericalError``) pruned with its
    step; seeded determinism (the same seed proposes the same parameters); resuming a search
    in its results directory keeps every finished trial and runs only the missing ones; a bad
    space or sampler raises ``ConfigError`` before anything runs. For ``ray``, a local Ray is
    started (bound to loopback) unless one is running, and stopped afterwards.

    Args:
        name: the backend.
        folder: scratch directory (default: a temporary one, deleted afterwards).

    Raises:
        AssertionError: the backend breaks the contract; the message says where.

    Example::

        from autometa.testing import check_backend

        def test_optuna_backend():
            check_backend("optuna")
    """
    if folder is None:
        with tempfile.TemporaryDirectory(prefix=f"check-{name}-") as scratch:
            return check_backend(name, scratch)
    folder = Path(folder)
    local = None
    if name == "ray":
        from autometa.search._ray import ray_is_running, start_local_ray

        if not ray_is_running():
            local = start_local_ray(num_cpus=2, object_store_memory=100 * 1024 * 1024)
    try:
        _check_bad_input(name)
        _check_runs(name, folder)
    finally:
        if local is not None:
            local.stop()


def _check_bad_input(name: str) -> None:
    import autometa.search
    from autometa.errors import ConfigError

    for space, what in (({"x": {"float": [2.0, 1.0]}}, "low > high"), ({"x": {"flaot": [0, 1]}}, "unknown kind")):
        try:
            autometa.search(lambda t: 0.0, space, backend=name, n_trials=1)
        except ConfigError:
            pass
        else:
            raise AssertionError(f"a bad space ({what}) was accepted by backend {name!r}")
    try:
        autometa.search(lambda t: 0.0, SPACE, backend=name, n_trials=1, sampler="no-such-sampler")
    except ConfigError:
        pass
    else:
        raise AssertionError(f"an unknown sampler was accepted by backend {name!r}")


def _check_runs(name: str, folder: Path) -> None:
    first_log, again_log = folder / "first.log", folder / "again.log"
    first = _search(name, _Objective(str(first_log)), n_trials=6, out_dir=folder / "out")
    check_result_format(name, first, _calls(first_log), 6)

    again = _search(name, _Objective(str(again_log)), n_trials=6)
    _check([t.params for t in again.trials] == [t.params for t in first.trials],
           f"the same seed proposed other parameters on {name!r}: {[t.params for t in again.trials]} vs "
           f"{[t.params for t in first.trials]}")

    resumed_log = folder / "resumed.log"
    resumed = _search(name, _Objective(str(resumed_log)), n_trials=8, out_dir=folder / "out", resume=True)
    numbers = [t.number for t in resumed.trials]
    _check(numbers == list(range(8)), f"a resumed search of 6 + 2 trials has trials {numbers}")
    _check(sorted(_calls(resumed_log)) == [6, 7], f"resuming re-ran trials: it ran {_calls(resumed_log)}, "
                                                  f"expected only the missing 6 and 7")
    for before, after in zip(first.trials, resumed.trials[:6]):
        _check((before.params, before.state, before.values) == (after.params, after.state, after.values),
               f"resuming changed trial {before.number}: {before} became {after}")
    params = [tuple(sorted(t.params.items())) for t in resumed.trials]
    _check(len(set(params)) == len(params), f"resuming proposed parameters again: {params}")

    diverged = _search(name, _Diverging(), n_trials=2)
    for t in diverged.trials:
        _check(t.state == "pruned" and t.values is None and t.user_attrs.get("diverged_at_step") == 5
               and t.error.startswith("diverged at step 5 with "),
               f"a trial raising NumericalError(step=5) on {name!r} should be pruned as diverged: {t}")


class _Diverging:
    """An objective whose run diverges at step 5 (picklable for Ray)."""

    def __call__(self, trial):
        from autometa.errors import NumericalError

        error = NumericalError("the loss was nan at step 5")
        error.step = 5
        raise error
