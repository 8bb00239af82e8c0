import argparse
import csv
import json

import pytest

import autometa.search
from autometa.errors import ConfigError
from autometa.search._cli import add_sweep_parser

TINY = {
    "seed": 0,
    "tasks": {"name": "sinusoid", "shots": 5, "queries": 5},
    "model": {"name": "mlp", "hidden": [16, 16]},
    "learner": {"name": "maml", "inner_lr": 0.01, "inner_steps": 1},
    "outer": {"optimizer": "adam", "lr": 0.001, "meta_batch": 2, "steps": 6},
    "run": {"validate_every": 2, "val_tasks": 8, "test_tasks": 8, "eval_batch": 8, "checkpoint_every": 0,
            "log_every": 2, "threads": 1, "progress": False},
}
SPACE = {"learner.inner_lr": {"float": [1e-3, 0.05], "log": True}, "learner.inner_steps": {"int": [1, 2]}}


def _parse(argv):
    parser = argparse.ArgumentParser(prog="autometa")
    add_sweep_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


@pytest.fixture
def config_file(tmp_path):
    import yaml

    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(SPACE))
    return path, space


@pytest.mark.parametrize("backend", ["optuna", "nni"])
def test_sweep_command_writes_the_same_results_format_for_each_backend(config_file, tmp_path, backend, capsys):
    config, space = config_file
    out = tmp_path / backend
    args = _parse(["sweep", str(config), "--space", str(space), "--backend", backend, "--trials", "3",
                   "--out", str(out), "--seed", "1"])
    assert args.func(args) == 0
    sweep = json.loads((out / "sweep.json").read_text())
    assert sweep["backend"] == backend and sweep["metric_names"] == ["val_loss"]
    assert sweep["directions"] == ["minimize"] and sweep["counts"]["complete"] == 3
    assert set(sweep["best"]) == {"number", "value", "params"}
    with open(out / "trials.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["number"] for r in rows] == ["0", "1", "2"]
    assert {"params.learner.inner_lr", "params.learner.inner_steps", "val_loss", "state"} <= set(rows[0])
    assert (out / "history.png").stat().st_size > 0 and (out / "importances.png").stat().st_size > 0
    for number in range(3):  # every trial's run directory, with its overridden config
        results = json.loads((out / "trials" / f"{number:04d}" / "results.json").read_text())
        assert "best_val" in results
    assert "best val_loss" in capsys.readouterr().out


def test_config_sweep_prunes_through_the_run_callback_and_checks_metric_directions():
    seen = []
    result = autometa.search(TINY, SPACE, n_trials=4, pruner="median", seed=0, sampler="random",
                             pruner_options={"n_startup_trials": 1, "n_warmup_steps": 0},
                             on_trial_end=seen.append)
    assert [r.number for r in seen] == [0, 1, 2, 3]
    assert all(len(t.intermediate) >= 1 for t in result.trials)
    assert any(t.state == "pruned" and max(t.intermediate) < 6 for t in result.trials)
    with pytest.raises(ConfigError, match="2 direction"):
        autometa.search(TINY, SPACE, n_trials=1, metric="test.loss", directions=["minimize", "maximize"])


def test_config_sweep_validates_the_space_against_the_config():
    bad = {**SPACE, "learner.momentum": {"float": [0.0, 0.9]}, "outer.warmup": {"int": [0, 3]}}
    with pytest.raises(ConfigError) as info:
        autometa.search(TINY, bad, n_trials=1)
    assert "'learner.momentum'" in str(info.value) and "'outer.warmup'" in str(info.value)


def test_two_metrics_give_a_pareto_front_of_loss_against_training_time(tmp_path):
    result = autometa.search(TINY, SPACE, n_trials=3, metric=["test.loss", "meta_train_time_s"], seed=0)
    assert result.directions == ["minimize", "minimize"] and result.metric_names == ["test.loss", "meta_train_time_s"]
    assert result.best_trials and "pareto" in result.write(tmp_path)


def test_resume_needs_out_and_directions_match_metrics(config_file):
    config, space = config_file
    args = _parse(["sweep", str(config), "--space", str(space), "--resume"])
    with pytest.raises(ConfigError, match="--resume needs --out"):
        args.func(args)
    args = _parse(["sweep", str(config), "--space", str(space), "--metric", "test.loss", "--metric", "wall_time_s",
                   "--direction", "minimize", "--out", "x"])
    with pytest.raises(ConfigError, match="one --direction per --metric"):
        args.func(args)


def test_a_misspelt_metric_fails_before_any_trial_with_a_suggestion_and_writes_nothing(config_file, tmp_path):
    config, space = config_file
    out = tmp_path / "never"
    args = _parse(["sweep", str(config), "--space", str(space), "--metric", "test.los", "--out", str(out)])
    with pytest.raises(ConfigError, match="did you mean 'test.loss'") as info:
        args.func(args)
    assert "regression" in str(info.value) and "'best_val'" in str(info.value)
    assert not out.exists()  # checked before the results directory is claimed
    from autometa.search._api import check_metrics

    classification = {"tasks": {"name": "omniglot"}, "run": {"validate_every": 100}}
    with pytest.raises(ConfigError, match="did you mean 'test.accuracy'"):
        check_metrics(classification, ["test.acuracy"])
    check_metrics(classification, ["test.accuracy", "test.loss.ci95", "best_val", "meta_train_time_s"])
    with pytest.raises(ConfigError, match="test.accuracy"):  # a regression run reports no accuracy
        check_metrics({"tasks": {"name": "sinusoid"}, "run": {}}, ["test.accuracy"])
    with pytest.raises(ConfigError, match="validate_every=0"):
        check_metrics({"tasks": {"name": "sinusoid"}, "run": {"validate_every": 0}}, ["best_val"])


def test_sweep_out_refuses_another_commands_directory_and_never_overwrites_a_sweep(config_file, tmp_path):
    from autometa.errors import ResultsDirError

    config, space = config_file
    run_dir = tmp_path / "a-run"
    run_dir.mkdir()
    (run_dir / "autometa.json").write_text(json.dumps({"kind": "run"}))
    args = _parse(["sweep", str(config), "--space", str(space), "--backend", "nni", "--trials", "1",
                   "--out", str(run_dir)])
    with pytest.raises(ResultsDirError, match="autometa run"):
        args.func(args)
    assert sorted(p.name for p in run_dir.iterdir()) == ["autometa.json"]

    out = tmp_path / "sweep"
    argv = ["sweep", str(config), "--space", str(space), "--backend", "nni", "--trials", "1", "--out", str(out)]
    assert _parse(argv).func(_parse(argv)) == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(ResultsDirError, match="--overwrite"):
        args = _parse(argv)
        args.func(args)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    args = _parse(argv + ["--overwrite"])
    assert args.func(args) == 0 and json.loads((out / "sweep.json").read_text())["counts"]["complete"] == 1
    args = _parse(argv + ["--resume", "--overwrite"])
    with pytest.raises(ConfigError, match="pass one of them"):
        args.func(args)
