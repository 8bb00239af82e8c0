import pytest

import autometa
import autometa.search
from autometa.errors import ConfigError, UnsupportedFeatureError
from autometa.search import SearchResult, TrialPruned

SPACE = {"x": {"float": [-5.0, 5.0]}, "n": {"int": [0, 3]}}


def quadratic(trial):
    return (trial.params["x"] - 1.0) ** 2 + trial.params["n"]


def test_search_is_callable_from_the_package_and_finds_the_minimum_region():
    result = autometa.search(quadratic, SPACE, n_trials=25, seed=0)
    assert result.backend == "optuna" and len(result.trials) == 25
    assert [t.number for t in result.trials] == list(range(25))
    assert all(t.state == "complete" and t.duration_s is not None for t in result.trials)
    assert result.best_value == min(t.value for t in result.trials) < 1.0
    assert result.best_params == result.best_trial.params


def test_same_seed_same_trials_and_sqlite_storage_in_out_dir(tmp_path):
    first = autometa.search(quadratic, SPACE, n_trials=6, seed=3, out_dir=tmp_path / "a")
    second = autometa.search(quadratic, SPACE, n_trials=6, seed=3, out_dir=tmp_path / "b")
    assert [t.params for t in first.trials] == [t.params for t in second.trials]
    assert (tmp_path / "a" / "study.db").is_file()
    assert first.info["storage"].startswith("sqlite:///")


def test_rerunning_refuses_to_overwrite_and_resume_adds_only_the_missing_trials(tmp_path):
    autometa.search(quadratic, SPACE, n_trials=4, out_dir=tmp_path)
    with pytest.raises(ConfigError, match="resume=True"):
        autometa.search(quadratic, SPACE, n_trials=6, out_dir=tmp_path)
    calls = []
    result = autometa.search(lambda t: calls.append(t.number) or quadratic(t), SPACE, n_trials=6,
                             out_dir=tmp_path, resume=True)
    assert calls == [4, 5] and [t.number for t in result.trials] == list(range(6))


def test_a_raising_trial_is_recorded_as_failed_and_the_search_goes_on():
    def objective(trial):
        if trial.number == 1:
            raise RuntimeError("diverged at step 3")
        return quadratic(trial)

    result = autometa.search(objective, SPACE, n_trials=4)
    states = [t.state for t in result.trials]
    assert states == ["complete", "failed", "complete", "complete"]
    assert result.trials[1].error == "RuntimeError: diverged at step 3" and result.trials[1].values is None


def test_non_finite_values_prune_the_trial_as_diverged_with_the_reason():
    result = autometa.search(lambda t: float("nan"), SPACE, n_trials=1)
    trial = result.trials[0]
    assert trial.state == "pruned" and trial.values is None and "non-finite" in trial.error
    assert trial.error.startswith("diverged (step unknown) with x=") and "outer.clip_grad" in trial.error


def test_median_pruner_stops_bad_trials_and_keeps_their_intermediate_values():
    def objective(trial):
        for step in range(6):
            trial.report(trial.params["x"] ** 2 + 1.0 / (step + 1), step)
            if trial.should_prune():
                raise TrialPruned()
        return trial.params["x"] ** 2

    result = autometa.search(objective, {"x": {"float": [-5.0, 5.0]}}, n_trials=12, seed=1, sampler="random",
                             pruner="median", pruner_options={"n_startup_trials": 3})
    pruned = [t for t in result.trials if t.state == "pruned"]
    assert pruned and all(len(t.intermediate) < 6 for t in pruned)
    assert all(t.values == [t.intermediate[max(t.intermediate)]] for t in pruned)
    assert all(len(t.intermediate) == 6 for t in result.completed)


@pytest.mark.parametrize("sampler", ["tpe", "random", "cmaes", "gp"])
def test_samplers_run(sampler):
    if sampler == "cmaes":
        pytest.importorskip("cmaes")
    result = autometa.search(quadratic, {"x": {"float": [-5.0, 5.0]}, "n": {"int": [0, 3]}},
                             n_trials=4, sampler=sampler, seed=0)
    assert len(result.completed) == 4


def test_grid_sampler_walks_every_combination_and_refuses_conditions():
    space = {"a": {"choice": ["p", "q"]}, "b": {"int": [1, 3]}}
    result = autometa.search(lambda t: t.params["b"], space, n_trials=6, sampler="grid")
    assert sorted((t.params["a"], t.params["b"]) for t in result.trials) == [(a, b) for a in "pq" for b in (1, 2, 3)]
    conditional = {"a": {"choice": ["p", "q"]}, "b": {"int": [1, 3], "when": {"a": ["p"]}}}
    with pytest.raises(UnsupportedFeatureError, match="conditional"):
        autometa.search(lambda t: 0.0, conditional, n_trials=2, sampler="grid")


def test_conditional_filler_parameters_appear_only_with_their_filler():
    space = {"optimizer": {"choice": ["SGD", "Adam", "LSTMOptimizer"]},
             "optimizer.lr": {"float": [1e-4, 1e-1], "log": True, "when": {"optimizer": ["SGD", "Adam"]}},
             "optimizer.hidden": {"int": [8, 32], "when": {"optimizer": ["LSTMOptimizer"]}}}
    result = autometa.search(lambda t: 1.0, space, n_trials=12, seed=0, sampler="random")
    for t in result.trials:
        expected = {"optimizer", "optimizer.hidden"} if t.params["optimizer"] == "LSTMOptimizer" \
            else {"optimizer", "optimizer.lr"}
        assert set(t.params) == expected


def test_define_by_run_parameters_outside_the_space():
    def objective(trial):
        width = trial.suggest_int("width", 8, 64, log=True)
        return trial.suggest("x") ** 2 + width / 64

    result = autometa.search(objective, {"x": {"float": [-1.0, 1.0]}}, n_trials=3)
    assert all(8 <= t.params["width"] <= 64 for t in result.trials)


def test_multi_objective_pareto_front_table_and_plots(tmp_path):
    def objective(trial):
        x = trial.params["x"]
        trial.set_user_attr("cost", x)
        return x, (x - 2.0) ** 2

    result = autometa.search(objective, {"x": {"float": [0.0, 2.0]}}, directions=["minimize", "minimize"],
                             n_trials=8, seed=0)
    front = result.best_trials
    assert len(front) == 8  # on [0, 2] the two objectives trade off everywhere
    with pytest.raises(ConfigError, match="Pareto"):
        _ = result.best_trial
    files = result.write(tmp_path)
    assert {"sweep", "trials", "history", "importances", "pareto"} <= set(files)
    assert all(p.stat().st_size > 0 for p in files.values())
    frame = result.to_dataframe()
    assert list(frame.columns[:4]) == ["number", "state", "objective_0", "objective_1"]
    assert frame["user_attrs.cost"].tolist() == [t.params["x"] for t in result.trials]
    loaded = SearchResult.load(tmp_path / "sweep.json")
    assert [t.values for t in loaded.trials] == [t.values for t in result.trials]
    assert [t.number for t in loaded.best_trials] == [t.number for t in front]
    with pytest.raises(UnsupportedFeatureError, match="multi-objective"):
        autometa.search(objective, {"x": {"float": [0.0, 2.0]}}, directions=["minimize", "minimize"],
                        n_trials=2, pruner="median")


def test_importances_rate_the_parameter_that_matters():
    def objective(trial):
        return 10 * trial.params["x"] ** 2 + 0.01 * trial.params["y"]

    result = autometa.search(objective, {"x": {"float": [-1.0, 1.0]}, "y": {"float": [-1.0, 1.0]}},
                             n_trials=20, sampler="random", seed=0)
    scores = result.importances()
    assert set(scores) == {"x", "y"} and scores["x"] > 0.8


def test_unsupported_and_invalid_arguments_say_what_to_do():
    with pytest.raises(UnsupportedFeatureError, match="needs backend='ray'"):
        autometa.search(quadratic, SPACE, n_trials=2, scheduler="pbt")
    with pytest.raises(UnsupportedFeatureError, match="Ray Tune setting"):
        autometa.search(quadratic, SPACE, n_trials=2, address="127.0.0.1:6379")
    with pytest.raises(ConfigError) as info:
        autometa.search(quadratic, SPACE, backend="hyperopt", n_trials=0, direction="up")
    assert all(s in str(info.value) for s in ("backend must be", "n_trials", "directions"))
    with pytest.raises(ConfigError, match="Unknown sampler"):
        autometa.search(quadratic, SPACE, n_trials=2, sampler="annealing")
    with pytest.raises(ConfigError, match="needs a search space"):
        autometa.search(quadratic, n_trials=2)


def test_write_leaves_out_importances_when_trials_cannot_rate_parameters(tmp_path):
    result = autometa.search(lambda t: 1.0, SPACE, n_trials=3)
    assert set(result.write(tmp_path)) == {"sweep", "trials", "history"}
    with pytest.raises(ConfigError, match="same value"):
        result.importances()


def test_trial_report_needs_an_integer_step():
    def objective(trial):
        trial.report(1.0, step=0.5)
        return 0.0

    result = autometa.search(objective, SPACE, n_trials=1)
    assert "integer step" in result.trials[0].error
