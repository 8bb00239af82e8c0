import json

import numpy as np
import pytest

import autometa
from autometa.cli import main
from autometa.compare import (
    compare,
    config_digest,
    filler_config,
    load_compare_config,
    quickstart_config,
    render_report,
)
from autometa.errors import ConfigError, ResultsDirError

RUN = {"validate_every": 3, "val_tasks": 10, "test_tasks": 24, "eval_batch": 12, "checkpoint_every": 0,
       "log_every": 1, "threads": 1}
TINY = {
    "seeds": [0, 1],
    "comparisons": [{
        "name": "sine", "slot": "initialization", "reference": "random",
        "base": {"tasks": {"name": "sinusoid", "shots": 5, "queries": 5}, "model": {"name": "mlp", "hidden": [8]},
                 "outer": {"meta_batch": 4, "steps": 6}, "run": RUN},
        "fillers": {
            "random": {"kind": "hand-crafted", "label": "random init",
                       "learner": {"name": "pretrained", "eval_inner_steps": 2}, "outer": {"steps": 0}},
            "maml": {"kind": "learned", "label": "MAML init",
                     "learner": {"name": "maml", "inner_lr": 0.01, "eval_inner_steps": 2}},
        },
    }],
}


def _copy(config):
    return json.loads(json.dumps(config))


def test_fillers_see_identical_tasks_and_report_rerenders(tmp_path, capsys):
    report = compare(TINY, tmp_path, progress=False)
    comp = report["comparisons"][0]
    digests = {json.loads((tmp_path / d / "results.json").read_text())["test_tasks_digest"]
               for e in comp["fillers"].values() for d in e["run_dirs"][:1]}
    assert len(digests) == 1  # same test tasks for every filler of a seed
    results = {name: json.loads((tmp_path / "sine" / name / "seed0" / "results.json").read_text())
               for name in ("random", "maml")}
    assert results["maml"]["train_tasks_digest"] and results["random"]["steps"] == 0
    maml = comp["fillers"]["maml"]
    assert maml["interval"]["n_seeds"] == 2 and maml["interval"]["n_tasks"] == 24
    assert maml["interval"]["level"] == "tasks"  # 2 seeds: no between-seed interval
    vs = maml["vs_reference"]
    assert not vs["significant"] and "no between-seed claim is possible with 2 seed(s)" in vs["verdict"]
    assert vs["verdict"].startswith("MAML init") and "random init" in vs["verdict"]  # labels, not keys
    assert maml["cost"]["meta_train_gflop"] > 0 and comp["fillers"]["random"]["cost"]["meta_steps"] == 0
    assert maml["cost"]["cpu_s"] > 0 and maml["cost"]["peak_rss_mb"] > 0
    for name in ("report.md", "report.json", "plots/sine_metric.png", "plots/sine_cost.png",
                 "plots/sine_adaptation.png", "plots/sine_curves.png"):
        assert (tmp_path / name).is_file(), name
    text = (tmp_path / "report.md").read_text()
    assert "Machine: " in text and "sinusoids" in text and "no between-seed claim" in text
    # re-render from the directory alone
    (tmp_path / "report.md").unlink()
    for png in (tmp_path / "plots").glob("*.png"):
        png.unlink()
    render_report(tmp_path)
    assert (tmp_path / "plots" / "sine_metric.png").is_file()
    capsys.readouterr()
    assert main(["report", str(tmp_path)]) == 0
    assert "sinusoids" in capsys.readouterr().out  # the terminal table names the dataset
    # a rerun with the same config reuses every run: nothing is repeated
    before = (tmp_path / "sine" / "maml" / "seed0" / "metrics.jsonl").stat().st_mtime_ns
    again = compare(TINY, tmp_path, progress=False, render=False)
    assert (tmp_path / "sine" / "maml" / "seed0" / "metrics.jsonl").stat().st_mtime_ns == before
    assert again["comparisons"][0]["fillers"]["maml"]["per_seed"] == maml["per_seed"]
    assert len(again["reused_runs"]) == 4 and again["recomputed_runs"] == []


def test_changed_config_into_existing_out_never_reuses_stale_runs(tmp_path):
    first = compare(TINY, tmp_path, progress=False, render=False)
    changed = _copy(TINY)
    changed["comparisons"][0]["base"]["outer"]["steps"] = 3  # maml's runs change; random has steps: 0
    again = compare(changed, tmp_path, progress=False, render=False)
    assert sorted(again["recomputed_runs"]) == ["sine/maml/seed0 (config changed)", "sine/maml/seed1 (config changed)"]
    assert sorted(again["reused_runs"]) == ["sine/random/seed0", "sine/random/seed1"]
    for seed in (0, 1):
        results = json.loads((tmp_path / "sine" / "maml" / f"seed{seed}" / "results.json").read_text())
        assert results["steps"] == 3
    maml = (r["comparisons"][0]["fillers"]["maml"]["per_seed"] for r in (first, again))
    assert next(maml) != next(maml)
    assert "steps: 3" in (tmp_path / "compare.yaml").read_text()


def test_compare_refuses_the_directory_of_a_run(tmp_path):
    from autometa.experiment._outdir import claim_out_dir

    claim_out_dir(tmp_path / "run", "run")
    (tmp_path / "run" / "metrics.jsonl").write_text("")
    with pytest.raises(ResultsDirError, match="autometa run"):
        compare(TINY, tmp_path / "run", progress=False, render=False)


def test_parallel_runs_equal_a_serial_run(tmp_path):
    config = _copy(TINY)
    config["comparisons"][0]["fillers"]["fomaml"] = {"kind": "learned",
                                                      "learner": {"name": "fomaml", "inner_lr": 0.05}}
    serial = compare(config, tmp_path / "serial", progress=False, render=False, workers=1)
    parallel = compare(config, tmp_path / "parallel", progress=False, render=False, workers=3)
    for name in ("random", "maml", "fomaml"):
        for seed in (0, 1):
            a, b = (json.loads((tmp_path / d / "sine" / name / f"seed{seed}" / "test_values.json").read_text())
                    for d in ("serial", "parallel"))
            assert a == b, (name, seed)  # every per-task number, to the last digit
    assert serial["comparisons"][0]["fillers"]["fomaml"]["interval"] == \
        parallel["comparisons"][0]["fillers"]["fomaml"]["interval"]


def test_identical_fillers_are_not_significantly_different(tmp_path):
    same = _copy(TINY)
    same["seeds"] = [0, 1, 2]
    comp = same["comparisons"][0]
    comp["fillers"]["copy"] = dict(comp["fillers"]["random"], label="copy")
    report = compare(same, tmp_path, progress=False, render=False)
    vs = report["comparisons"][0]["fillers"]["copy"]["vs_reference"]
    assert vs["level"] == "seeds" and vs["mean"] == 0 and not vs["significant"]
    assert vs["verdict"].startswith("no significant difference between copy and random init")


def test_equal_budgets_mean_identical_meta_training_tasks(tmp_path):
    same = _copy(TINY)
    fillers = same["comparisons"][0]["fillers"]
    fillers["fomaml"] = {"kind": "learned", "learner": {"name": "fomaml", "inner_lr": 0.01}}
    compare(same, tmp_path, progress=False, render=False)
    digest = [json.loads((tmp_path / "sine" / n / "seed1" / "results.json").read_text())["train_tasks_digest"]
              for n in ("maml", "fomaml")]
    assert digest[0] == digest[1]
    fillers["fomaml"]["tasks"] = {"train_queries": 6}  # other meta-training tasks, same budget
    with pytest.raises(ConfigError, match="different tasks"):
        compare(same, tmp_path / "other", progress=False, render=False)


def test_fillers_with_different_test_tasks_are_refused(tmp_path):
    bad = _copy(TINY)
    bad["comparisons"][0]["fillers"]["maml"]["run"] = {"test_seed": 99}
    with pytest.raises(ConfigError, match="other tasks"):
        compare(bad, tmp_path, progress=False, render=False)


def test_invalid_comparison_config_lists_every_problem():
    bad = {"seeds": "zero", "comparisons": [{"name": "x", "reference": "nope", "base": {},
                                             "fillers": {"a": {"kind": "magic"}, "b": {"kind": "learned"}}}]}
    with pytest.raises(ConfigError) as info:
        load_compare_config(bad)
    text = str(info.value)
    for fragment in ("seeds", "reference", "kind", "tasks.name"):
        assert fragment in text
    assert isinstance(info.value, ValueError)


SLOT = {"name": "opt", "slot": "optimizer", "reference": "adam",
        "base": {"tasks": {"name": "sinusoid"}, "learner": {"name": "maml", "inner_lr": 0.01},
                 "outer": {"steps": 5}, "run": {"test_seed": 7}}}


def test_slot_filler_is_placed_at_the_learner_section_of_the_slot():
    config = filler_config(SLOT, {"kind": "hand-crafted", "filler": {"name": "adam", "lr": 0.01}}, seed=3)
    assert config["learner"] == {"name": "maml", "inner_lr": 0.01, "optimizer": {"name": "adam", "lr": 0.01}}
    assert config["seed"] == 3 and config["run"]["threads"] == 1 and config["run"]["test_seed"] == 7
    assert SLOT["base"]["learner"] == {"name": "maml", "inner_lr": 0.01}  # the base is not modified
    # a tuned value of the slot's filler (learner.optimizer.lr from the search space) wins over the default
    tuned = filler_config(SLOT, {"kind": "tuned", "filler": {"name": "sgd", "lr": 0.1},
                                 "learner": {"optimizer": {"lr": 0.02}}}, seed=0)
    assert tuned["learner"]["optimizer"] == {"name": "sgd", "lr": 0.02}
    # the override form still works beside it
    plain = filler_config(SLOT, {"kind": "learned", "learner": {"name": "metasgd"}}, seed=0)
    assert plain["learner"] == {"name": "metasgd", "inner_lr": 0.01}


def test_slot_grammar_is_validated():
    good = dict(SLOT, fillers={
        "adam": {"kind": "hand-crafted", "filler": {"name": "adam", "lr": 0.01}},
        "sgd": {"kind": "tuned", "filler": {"name": "sgd"},
                "tune": {"trials": 2, "space": {"learner.optimizer.lr": {"float": [0.001, 0.1], "log": True}}}},
        "lstm": {"kind": "learned", "filler": {"name": "lstm"}},
    })
    assert load_compare_config({"comparisons": [good]})["comparisons"][0]["fillers"]["sgd"]["kind"] == "tuned"
    bad = dict(SLOT, slot="initialization and embedding", fillers={
        "adam": {"kind": "hand-crafted", "filler": {"lr": 0.01}},
        "sgd": {"kind": "tuned", "filler": {"name": "sgd"}},
        "rule": {"kind": "hand-crafted", "learner": {"name": "maml"}, "tune": {"space": {}}},
    })
    with pytest.raises(ConfigError) as info:
        load_compare_config({"comparisons": [bad]})
    text = str(info.value)
    assert "learner section name such as optimizer or loss" in text
    assert "filler: must be a mapping with a name" in text
    assert "kind tuned needs a tune: block" in text
    assert "has a tune: block, so its kind is tuned" in text


def test_config_digest_changes_with_any_value():
    config = filler_config(SLOT, {"kind": "hand-crafted", "filler": {"name": "adam", "lr": 0.01}}, seed=0)
    other = filler_config(SLOT, {"kind": "hand-crafted", "filler": {"name": "adam", "lr": 0.02}}, seed=0)
    assert config_digest(config) == config_digest(json.loads(json.dumps(config)))  # key order does not matter
    assert config_digest(config) != config_digest(other)


def test_quickstart_config_is_valid_with_and_without_omniglot():
    for flag in (False, True):
        cfg = load_compare_config(quickstart_config(use_omniglot=flag))
        assert [c["name"] for c in cfg["comparisons"]] == ["sinusoid_init", "inner_optimizer",
                                                           "fewshot_classification"]


def test_autometa_compare_is_callable_and_a_package():
    import autometa.compare as package

    assert autometa.compare is package and callable(autometa.compare)
    assert np.isclose(package.nested_interval(np.ones((3, 4)))["mean"], 1.0)


def test_quiet_cli_prints_only_the_report_path(tmp_path, capsys):
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(TINY))
    assert main(["compare", str(path), "--out", str(tmp_path / "out"), "--quiet", "--workers", "2"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out == [f"report: {tmp_path / 'out' / 'report.md'}"]


def test_workers_see_the_callers_environment_at_call_time(tmp_path, monkeypatch):
    # the fork server starts once per process; a later call with another $AUTOMETA_DATA must reach the runs
    cheap = _copy(TINY)
    cheap["seeds"] = [0]
    cheap["comparisons"][0]["fillers"]["maml"]["outer"] = {"steps": 0}
    for name in ("first", "second"):
        monkeypatch.setenv("AUTOMETA_DATA", str(tmp_path / name))
        compare(cheap, tmp_path / name, progress=False, render=False)
        results = json.loads((tmp_path / name / "sine" / "maml" / "seed0" / "results.json").read_text())
        assert results["process"]["data_dir"] == str(tmp_path / name)


def test_every_filler_is_checked_before_any_job_runs(tmp_path):
    """A misspelt learner or filler in any filler fails at once, before another filler trains
    (found by benchmarks/fault_injection_inputs.py: the error came after a whole run)."""
    import autometa.compare
    from autometa.errors import ConfigError

    base = {"tasks": {"name": "sinusoid", "shots": 5, "queries": 5}, "model": {"name": "mlp", "hidden": [8]},
            "outer": {"steps": 2, "meta_batch": 2}, "run": {"validate_every": 0, "test_tasks": 2, "progress": False}}
    for bad, words in (({"learner": {"name": "mamll"}}, "did you mean 'maml'"),
                       ({"learner": {"name": "maml", "optimizer": {"name": "adma"}}}, "did you mean 'adam'")):
        fillers = {"good": {"kind": "hand-crafted", "learner": {"name": "maml"}}, "bad": {"kind": "learned", **bad}}
        config = {"seeds": [0], "comparisons": [{"name": "c", "slot": "optimizer", "reference": "good", "base": base,
                                                  "fillers": fillers}]}
        out = tmp_path / words.split("'")[1]
        with pytest.raises(ConfigError, match=words):
            autometa.compare(config, out)
        assert not list(out.rglob("results.json"))


def test_a_misspelt_slot_is_one_error_with_did_you_mean_before_any_run(tmp_path, capsys):
    """Whole-learner fillers (no filler: section) name their slot as a label; a typo in it was accepted
    and the comparison ran (found by benchmarks/fault_injection_inputs.py, CLI and Python API)."""
    bad = _copy(TINY)
    bad["comparisons"][0]["slot"] = "initializaton"
    with pytest.raises(ConfigError, match=r"slot 'initializaton' is unknown \(did you mean 'initialization'\?\)"):
        autometa.compare(bad, tmp_path / "api")
    assert not (tmp_path / "api").exists()
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    assert main(["compare", str(path), "--out", str(tmp_path / "cli")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("autometa: error:") and "did you mean 'initialization'" in err and "Traceback" not in err
    assert not (tmp_path / "cli").exists()
    # one misspelt part of a joined label is named; known labels and joined labels pass
    bad["comparisons"][0]["slot"] = "initialization and embeding"
    with pytest.raises(ConfigError, match=r"'embeding' is unknown \(did you mean 'embedding'\?\)"):
        load_compare_config(bad)
    bad["comparisons"][0]["slot"] = "initializaton (a remark)"
    with pytest.raises(ConfigError, match=r"'initializaton' is unknown \(did you mean 'initialization'\?\)"):
        load_compare_config(bad)
    for label in ("initialization", "optimizer", "initialization and embedding", "loss, weighting",
                  "model-based learner (generated FiLM + head)"):
        bad["comparisons"][0]["slot"] = label
        assert load_compare_config(_copy(bad))["comparisons"][0]["slot"] == label
