import random

import numpy as np
import pytest

import autometa.search
from autometa.errors import ConfigError, UnsupportedFeatureError
from autometa.search import TrialPruned

pytest.importorskip("nni")

SPACE = {"x": {"float": [-5.0, 5.0]}, "n": {"int": [0, 3]}, "lr": {"float": [1e-4, 1e-1], "log": True},
         "act": {"choice": ["relu", "tanh"]}}


def objective(trial):
    if trial.params["x"] > 4.0:
        raise ValueError("x too large for this model")
    return (trial.params["x"] - 1.0) ** 2 + trial.params["n"]


@pytest.mark.parametrize("sampler", ["tpe", "random", "evolution"])
def test_nni_tuners_are_seeded_keep_the_space_and_leave_global_rngs_alone(sampler):
    random.seed(7)
    np.random.seed(7)
    expected = (random.random(), np.random.rand())
    random.seed(7)
    np.random.seed(7)
    first = autometa.search(objective, SPACE, backend="nni", sampler=sampler, n_trials=10, seed=2)
    assert (random.random(), np.random.rand()) == expected
    second = autometa.search(objective, SPACE, backend="nni", sampler=sampler, n_trials=10, seed=2)
    assert [t.params for t in first.trials] == [t.params for t in second.trials]
    for t in first.trials:
        assert -5.0 <= t.params["x"] <= 5.0 and t.params["n"] in (0, 1, 2, 3) and isinstance(t.params["n"], int)
        assert 1e-4 <= t.params["lr"] <= 1e-1 and t.params["act"] in ("relu", "tanh")
        assert (t.state == "failed") == (t.params["x"] > 4.0)
    failed = [t for t in first.trials if t.state == "failed"]
    assert all(t.error == "ValueError: x too large for this model" for t in failed)


def test_median_stop_assessor_prunes_on_nni():
    def curve(trial):
        for step in range(5):
            trial.report(trial.params["x"] ** 2 + 1.0 / (step + 1), step)
            if trial.should_prune():
                raise TrialPruned()
        return trial.params["x"] ** 2

    result = autometa.search(curve, {"x": {"float": [-5.0, 5.0]}}, backend="nni", sampler="random",
                             pruner="median", n_trials=12, seed=0)
    assert any(t.state == "pruned" for t in result.trials)
    assert all(len(t.intermediate) == 5 for t in result.completed)


def test_nni_refuses_what_it_cannot_do():
    conditional = {"a": {"choice": ["p", "q"]}, "b": {"int": [1, 3], "when": {"a": ["p"]}}}
    with pytest.raises(UnsupportedFeatureError, match="conditional"):
        autometa.search(objective, conditional, backend="nni", n_trials=2)
    with pytest.raises(UnsupportedFeatureError, match="one objective"):
        autometa.search(objective, SPACE, backend="nni", n_trials=2, directions=["minimize", "maximize"])
    with pytest.raises(UnsupportedFeatureError, match="needs backend='ray'"):
        autometa.search(objective, SPACE, backend="nni", n_trials=2, scheduler="asha")
    with pytest.raises(ConfigError, match="Unknown sampler"):
        autometa.search(objective, SPACE, backend="nni", n_trials=2, sampler="gp")


def test_define_by_run_fails_the_trial_with_a_remedy_on_nni():
    result = autometa.search(lambda t: t.suggest_float("y", 0, 1), SPACE, backend="nni", n_trials=1)
    assert result.trials[0].state == "failed" and "Add 'y' to the space" in result.trials[0].error
