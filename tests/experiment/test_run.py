import json

import pytest
import torch

from autometa.cli import main
from autometa.errors import AutometaError, CheckpointError, ConfigError, ResultsDirError
from autometa.experiment import load_config, run_experiment

SINE = {
    "seed": 3,
    "tasks": {"name": "sinusoid", "shots": 5, "queries": 5},
    "model": {"name": "mlp", "hidden": [16, 16]},
    "learner": {"name": "maml", "inner_lr": 0.01},
    "outer": {"meta_batch": 4, "steps": 12},
    "run": {"validate_every": 4, "val_tasks": 20, "test_tasks": 30, "eval_batch": 10,
            "checkpoint_every": 4, "log_every": 2, "progress": False},
}


def read_metrics(path):
    return [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]


def strip_times(rows):
    return [{k: v for k, v in r.items() if k not in ("time_s", "cpu_time_s")} for r in rows]


def test_results_directory_contents(tmp_path):
    results = run_experiment(SINE, tmp_path / "run")
    out = tmp_path / "run"
    for name in ("config.yaml", "versions.json", "metrics.jsonl", "results.json", "checkpoints/last.pt",
                 "checkpoints/best.pt"):
        assert (out / name).is_file(), name
    saved = json.loads((out / "results.json").read_text())
    assert saved["test"]["loss"]["n"] == 30 and saved["test"]["loss"]["ci95"] > 0
    assert saved == json.loads(json.dumps(results))
    assert "torch" in json.loads((out / "versions.json").read_text())
    steps = [r["step"] for r in read_metrics(out) if "val_loss" in r]
    assert steps == [4, 8, 12]


def test_resumed_run_matches_uninterrupted_run(tmp_path):
    full = run_experiment(SINE, tmp_path / "full")
    # the "interrupted" run stops after 8 steps, then resumes to 12
    run_experiment(SINE, tmp_path / "part", overrides=["outer.steps=8"])
    resumed = run_experiment(SINE, tmp_path / "part", resume=True, overrides=["outer.steps=12"])
    assert resumed["test"] == full["test"] and resumed["best_val"] == full["best_val"]
    assert resumed["resumed_from_step"] == 8 and resumed["steps"] == 12
    assert strip_times(read_metrics(tmp_path / "part")) == strip_times(read_metrics(tmp_path / "full"))


def test_resume_without_overrides_keeps_the_runs_own_steps(tmp_path, capsys):
    # issue #16: a run started with --set outer.steps=N and resumed without it ends at N, not at the file's steps
    import yaml

    config = tmp_path / "sine.yaml"
    config.write_text(yaml.safe_dump({**SINE, "outer": {**SINE["outer"], "steps": 70000}}))
    out = tmp_path / "run"
    run_experiment(str(config), out, overrides=["outer.steps=6", "run.checkpoint_every=2"])
    ckpt = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    ckpt["step"] = 4  # as if killed after the checkpoint of step 4
    torch.save(ckpt, out / "checkpoints" / "last.pt")
    # (the time budget only bounds the test should the file's 70000 steps win)
    results = run_experiment(str(config), out, resume=True, overrides=["run.progress=true", "run.time_budget_s=30"])
    assert results["steps"] == 6 and results["resumed_from_step"] == 4
    assert yaml.safe_load((out / "config.yaml").read_text())["outer"]["steps"] == 6
    assert f"resuming {out} at step 4 of 6" in capsys.readouterr().err
    # through the CLI, without the config file: the run's own config.yaml
    assert main(["run", "--out", str(out), "--resume", "--set", "outer.steps=8", "--set", "run.progress=false"]) == 0
    assert json.loads((out / "results.json").read_text())["steps"] == 8


def test_same_seed_same_numbers_other_seed_other_numbers():
    a = run_experiment(SINE)
    b = run_experiment(SINE)
    c = run_experiment({**SINE, "seed": 4})
    assert a["test"] == b["test"] and a["test"] != c["test"]


def test_existing_run_is_not_overwritten(tmp_path):
    run_experiment(SINE, tmp_path / "run", overrides=["outer.steps=4"])
    before = (tmp_path / "run" / "metrics.jsonl").read_text()
    with pytest.raises(ResultsDirError, match="--resume.*--overwrite"):
        run_experiment(SINE, tmp_path / "run")
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == before
    # an explicit --overwrite replaces it, but only once the new config is known to be good
    with pytest.raises(ConfigError, match="shot"):
        run_experiment(SINE, tmp_path / "run", overwrite=True, overrides=["tasks.shot=5"])
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == before
    assert run_experiment(SINE, tmp_path / "run", overwrite=True, overrides=["outer.steps=2"])["steps"] == 2
    assert (tmp_path / "run" / "metrics.jsonl").read_text() != before


def test_corrupted_checkpoint_is_one_clear_error_and_loses_nothing(tmp_path):
    run_experiment(SINE, tmp_path / "run", overrides=["outer.steps=4"])
    ckpt = tmp_path / "run" / "checkpoints" / "last.pt"
    ckpt.write_bytes(b"not a checkpoint")
    before = (tmp_path / "run" / "metrics.jsonl").read_text()
    with pytest.raises(CheckpointError, match="damaged"):
        run_experiment(SINE, tmp_path / "run", resume=True)
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == before
    assert (tmp_path / "run" / "checkpoints" / "best.pt").is_file()


def test_resume_with_a_different_config_is_refused(tmp_path):
    run_experiment(SINE, tmp_path / "run", overrides=["outer.steps=4"])
    with pytest.raises(CheckpointError, match="learner.inner_lr"):
        run_experiment(SINE, tmp_path / "run", resume=True, overrides=["learner.inner_lr=0.5"])


def test_invalid_config_reports_every_problem_at_once():
    bad = {**SINE, "outer": {"lr": -1, "steps": -1, "optimizr": "adam"}, "run": {"val_tasks": "many"},
           "tasks": {"shots": 5}}
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    message = str(info.value)
    for fragment in ("outer.lr", "outer.steps", "outer.optimizr", "run.val_tasks", "tasks.name"):
        assert fragment in message
    assert isinstance(info.value, ValueError)


def test_construction_problems_are_collected():
    bad = {**SINE, "tasks": {"name": "sinusoid", "shots": 0}, "learner": {"name": "maml", "inner_lr": -1}}
    with pytest.raises(ConfigError, match="shots") as info:
        run_experiment(bad)
    assert "tasks (train)" in str(info.value)


def test_time_budget_stops_meta_training(tmp_path):
    res = run_experiment(SINE, overrides=["outer.steps=100000", "run.time_budget_s=0.5", "run.validate_every=0"])
    assert res["out_of_time"] and res["steps"] < 100000


def test_cli_run_and_errors(tmp_path, capsys):
    import yaml

    config = tmp_path / "sine.yaml"
    config.write_text(yaml.safe_dump(SINE))
    assert main(["run", str(config), "--out", str(tmp_path / "out"), "--set", "outer.steps=2"]) == 0
    assert (tmp_path / "out" / "results.json").is_file()
    assert main(["run", str(tmp_path / "missing.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    broken = tmp_path / "broken.yaml"
    broken.write_text("tasks: [unclosed")
    assert main(["run", str(broken)]) == 2
    assert "not valid YAML" in capsys.readouterr().err
    assert main(["run", str(config), "--set", "novalue"]) == 2


def test_import_autometa_does_not_import_search_libraries():
    import subprocess
    import sys

    code = ("import sys, autometa, autometa.learners, autometa.experiment, autometa.cli; "
            "bad = [m for m in ('optuna', 'ray', 'nni') if m in sys.modules]; print(bad); sys.exit(bool(bad))")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_errors_derive_from_base_and_builtin():
    assert issubclass(ConfigError, AutometaError) and issubclass(ConfigError, ValueError)
    assert issubclass(CheckpointError, AutometaError)
    torch.manual_seed(0)


def test_resume_accepts_a_run_saved_before_a_new_default_was_added(tmp_path):
    import yaml

    run_experiment(SINE, tmp_path / "run", overrides=["outer.steps=4"])
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    del saved["run"]["count_flops"]  # as written by an older autometa
    (tmp_path / "run" / "config.yaml").write_text(yaml.safe_dump(saved))
    assert run_experiment(SINE, tmp_path / "run", resume=True, overrides=["outer.steps=12"])["steps"] == 12


def test_flops_are_counted_for_threaded_conv_learners():
    torch.set_num_threads(2)
    config = {**SINE, "tasks": {"name": "digits", "ways": 3, "shots": 1, "queries": 2,
                                "classes": {"train": 5, "val": 0, "test": 5}},
              "model": {"name": "conv4", "hidden": 4, "blocks": 3},
              "learner": {"name": "maml", "inner_lr": 0.1},
              "run": {**SINE["run"], "validate_every": 0, "count_flops": True, "test_tasks": 4}}
    results = run_experiment(config, overrides=["outer.steps=1"])
    assert results["flops"]["meta_step"] > 0 and results["flops"]["per_test_task"] > 0


def test_evaluate_a_finished_run_on_other_tasks(tmp_path, capsys):
    config = {**SINE, "tasks": {"name": "digits", "ways": 3, "shots": 1, "queries": 2,
                                "classes": {"train": 5, "val": 0, "test": 5}},
              "model": {"name": "conv4", "hidden": 4, "blocks": 3}, "learner": {"name": "protonet"},
              "run": {**SINE["run"], "validate_every": 0, "test_tasks": 10}}
    run_experiment(config, tmp_path / "run", overrides=["outer.steps=2"])
    before = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert main(["evaluate", str(tmp_path / "run"), "--set", "tasks.ways=5", "--checkpoint", "last.pt"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["accuracy"]["n"] == 10 and out["overrides"] == ["tasks.ways=5"]
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == before  # nothing written into the run
    assert main(["evaluate", str(tmp_path / "run")]) == 2  # no best.pt without validation: one clear error
    assert "No checkpoint" in capsys.readouterr().err


def test_resume_repeating_the_original_command_is_accepted_and_a_changed_one_refused(tmp_path):
    run_experiment(SINE, tmp_path / "run", overrides=["outer.steps=4", "learner.inner_lr=0.02"])
    with pytest.raises(CheckpointError, match=r"\['learner.inner_lr'\].*autometa run --resume --out"):
        run_experiment(SINE, tmp_path / "run", resume=True)  # the file without the original --set
    resumed = run_experiment(SINE, tmp_path / "run", resume=True,
                             overrides=["outer.steps=6", "learner.inner_lr=0.02"])  # the same command, extended
    assert resumed["steps"] == 6 and resumed["resumed_from_step"] == 4
