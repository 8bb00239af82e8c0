import json
from pathlib import Path

import pytest

import autometa.search
from autometa.errors import ConfigError, UnsupportedFeatureError

pytest.importorskip("ray.tune")

SPACE = {"x": {"float": [-5.0, 5.0]}, "n": {"int": [0, 3]}}


def test_retries_checkpoints_failures_and_asha_on_local_ray(local_ray, tmp_path):
    attempts = tmp_path / "attempts"
    attempts.mkdir()

    def objective(trial):
        marker = attempts / f"{trial.number}"
        first_attempt = not marker.exists()
        marker.write_text("x")
        start = 0
        if trial.last_checkpoint() is not None:  # a retry continues from its checkpoint
            start = json.loads((Path(trial.last_checkpoint()) / "state.json").read_text())["step"] + 1
            trial.set_user_attr("resumed_at", start)
        if trial.number == 4:
            raise RuntimeError("always fails")
        for step in range(start, 4):
            folder = tmp_path / f"ckpt-{trial.number}-{step}"
            folder.mkdir()
            (folder / "state.json").write_text(json.dumps({"step": step}))
            trial.report((trial.params["x"] - 1) ** 2 + 1.0 / (step + 1), step, checkpoint=str(folder))
            if trial.number == 1 and first_attempt and step == 0:  # before ASHA's first rung
                raise RuntimeError("lost the node")
        return (trial.params["x"] - 1) ** 2

    finished = []
    result = autometa.search(objective, SPACE, backend="ray", n_trials=6, sampler="random", seed=0,
                             scheduler="asha", pruner_options={"max_t": 5, "grace_period": 2},
                             max_retries=1, resources={"cpu": 0.5}, out_dir=tmp_path / "out",
                             on_trial_end=finished.append)
    assert [t.number for t in result.trials] == list(range(6))
    by_number = {t.number: t for t in result.trials}
    assert by_number[4].state == "failed" and by_number[4].error == "RuntimeError: always fails"
    assert by_number[1].state in ("complete", "pruned") and by_number[1].user_attrs.get("resumed_at") == 1, by_number[1]
    assert {t.state for t in result.trials} <= {"complete", "pruned", "failed"}
    assert all(t.intermediate and max(t.intermediate) <= 3 for t in result.trials if t.state != "failed")
    assert sorted(r.number for r in finished) == list(range(6))
    assert result.info["storage"].endswith("out/ray/autometa")


def test_optuna_tpe_through_ray_with_a_conditional_space_and_two_objectives(local_ray):
    space = {"optimizer": {"choice": ["SGD", "LSTMOptimizer"]},
             "optimizer.lr": {"float": [1e-3, 1e-1], "log": True, "when": {"optimizer": ["SGD"]}},
             "optimizer.hidden": {"int": [8, 32], "when": {"optimizer": ["LSTMOptimizer"]}}}

    def objective(trial):
        cost = trial.params.get("optimizer.hidden", 1)
        quality = trial.params.get("optimizer.lr", 0.5)
        return quality, cost

    result = autometa.search(objective, space, backend="ray", n_trials=5, sampler="tpe", seed=1,
                             directions=["minimize", "minimize"])
    assert [t.number for t in result.trials] == list(range(5))
    for t in result.trials:
        assert t.state == "complete"
        assert set(t.params) == ({"optimizer", "optimizer.hidden"} if t.params["optimizer"] == "LSTMOptimizer"
                                 else {"optimizer", "optimizer.lr"})
    assert result.best_trials and result.metric_names == ["objective_0", "objective_1"]


def test_restore_finishes_errored_trials_without_rerunning_finished_ones(local_ray, tmp_path):
    calls = tmp_path / "calls.log"
    broken = tmp_path / "broken"
    broken.write_text("x")

    def objective(trial):
        with open(calls, "a") as f:
            f.write(f"{trial.number}\n")
        if trial.number == 2 and broken.exists():
            raise RuntimeError("interrupted")
        return trial.params["x"] ** 2

    kwargs = dict(backend="ray", n_trials=4, sampler="random", seed=0, out_dir=tmp_path / "out")
    first = autometa.search(objective, SPACE, **kwargs)
    assert [t.state for t in first.trials] == ["complete", "complete", "failed", "complete"]
    with pytest.raises(ConfigError, match="resume=True"):
        autometa.search(objective, SPACE, **kwargs)
    broken.unlink()
    second = autometa.search(objective, SPACE, resume=True, max_retries=1, **kwargs)
    assert [t.state for t in second.trials] == ["complete"] * 4
    assert [t.params for t in second.trials] == [t.params for t in first.trials]
    runs = calls.read_text().split()
    assert sorted(runs) == ["0", "1", "2", "2", "3"]


@pytest.mark.slow
def test_population_based_training_exploits_through_checkpoints(local_ray, tmp_path):
    def objective(trial):
        start, score = 0, 0.0
        if trial.last_checkpoint() is not None:
            state = json.loads((Path(trial.last_checkpoint()) / "state.json").read_text())
            start, score = state["step"] + 1, state["score"]
        for step in range(start, 6):
            score += trial.params["lr"]
            folder = Path(tmp_path) / f"{trial.number}-{step}-{score}"
            folder.mkdir(exist_ok=True)
            (folder / "state.json").write_text(json.dumps({"step": step, "score": score}))
            trial.report(score, step, checkpoint=str(folder))
        return score

    result = autometa.search(objective, {"lr": {"float": [0.0, 1.0]}}, backend="ray", n_trials=4,
                             sampler="random", scheduler="pbt", direction="maximize", seed=0,
                             pruner_options={"perturbation_interval": 2})
    assert len(result.completed) == 4


def test_ray_refuses_what_it_cannot_do_before_starting_ray():
    with pytest.raises(UnsupportedFeatureError, match="scheduler='asha'"):
        autometa.search(lambda t: 0.0, SPACE, backend="ray", n_trials=2, pruner="median")
    with pytest.raises(UnsupportedFeatureError, match="sampler='random'"):
        autometa.search(lambda t: 0.0, SPACE, backend="ray", n_trials=2, scheduler="pbt")
    with pytest.raises(UnsupportedFeatureError, match="timeout"):
        autometa.search(lambda t: 0.0, SPACE, backend="ray", n_trials=2, timeout=10)
    with pytest.raises(UnsupportedFeatureError, match="multi-objective"):
        autometa.search(lambda t: (0.0, 1.0), SPACE, backend="ray", n_trials=2, sampler="random",
                        directions=["minimize", "minimize"])
