import json

import pytest

from autometa.cli import main
from autometa.errors import ConfigError
from autometa.experiment import compare, load_compare_config, render_report
from autometa.experiment._quickstart import quickstart_config

RUN = {"validate_every": 3, "val_tasks": 10, "test_tasks": 24, "eval_batch": 12, "checkpoint_every": 0,
       "log_every": 1, "threads": 1}
TINY = {
    "seeds": [0, 1],
    "comparisons": [{
        "name": "sine", "slot": "initialization", "reference": "random",
        "base": {"tasks": {"name": "sinusoid", "shots": 5, "queries": 5}, "model": {"name": "mlp", "hidden": [8]},
                 "outer": {"meta_batch": 4, "steps": 6}, "run": RUN},
        "fillers": {
            "random": {"kind": "hand-crafted", "learner": {"name": "pretrained", "eval_inner_steps": 2},
                       "outer": {"steps": 0}},
            "maml": {"kind": "learned", "learner": {"name": "maml", "inner_lr": 0.01, "eval_inner_steps": 2}},
        },
    }],
}


def test_fillers_see_identical_tasks_and_report_rerenders(tmp_path):
    report = compare(TINY, tmp_path, progress=False)
    comp = report["comparisons"][0]
    digests = {json.loads((tmp_path / d / "results.json").read_text())["test_tasks_digest"]
               for e in comp["fillers"].values() for d in e["run_dirs"][:1]}
    assert len(digests) == 1  # same test tasks for every filler of a seed
    results = {name: json.loads((tmp_path / "sine" / name / "seed0" / "results.json").read_text())
               for name in ("random", "maml")}
    assert results["maml"]["train_tasks_digest"] and results["random"]["steps"] == 0
    maml = comp["fillers"]["maml"]
    assert maml["over_tasks"]["n"] == 48 and maml["over_seeds"]["n"] == 2
    assert set(maml["vs_reference"]) >= {"over_tasks", "over_seeds", "significant", "verdict", "per_seed"}
    assert maml["cost"]["meta_train_gflop"] > 0 and comp["fillers"]["random"]["cost"]["meta_steps"] == 0
    for name in ("report.md", "report.json", "plots/sine_metric.png", "plots/sine_cost.png",
                 "plots/sine_adaptation.png", "plots/sine_curves.png"):
        assert (tmp_path / name).is_file(), name
    # re-render from the directory alone
    (tmp_path / "report.md").unlink()
    for png in (tmp_path / "plots").glob("*.png"):
        png.unlink()
    render_report(tmp_path)
    assert "significant" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "plots" / "sine_metric.png").is_file()
    assert main(["report", str(tmp_path)]) == 0
    # an interrupted comparison continues: finished runs are reused, not repeated
    before = (tmp_path / "sine" / "maml" / "seed0" / "metrics.jsonl").stat().st_mtime_ns
    again = compare(TINY, tmp_path, progress=False, render=False)
    assert (tmp_path / "sine" / "maml" / "seed0" / "metrics.jsonl").stat().st_mtime_ns == before
    assert again["comparisons"][0]["fillers"]["maml"]["per_seed"] == maml["per_seed"]


def test_identical_fillers_are_not_significantly_different(tmp_path):
    same = json.loads(json.dumps(TINY))
    comp = same["comparisons"][0]
    comp["fillers"]["copy"] = dict(comp["fillers"]["random"])
    report = compare(same, tmp_path, progress=False, render=False)
    vs = report["comparisons"][0]["fillers"]["copy"]["vs_reference"]
    assert vs["over_tasks"]["mean"] == 0 and not vs["significant"]
    assert vs["verdict"].startswith("no significant difference")


def test_equal_budgets_mean_identical_meta_training_tasks(tmp_path):
    same = json.loads(json.dumps(TINY))
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
    bad = json.loads(json.dumps(TINY))
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


def test_quickstart_config_is_valid_with_and_without_omniglot():
    for flag in (False, True):
        cfg = load_compare_config(quickstart_config(use_omniglot=flag))
        assert [c["name"] for c in cfg["comparisons"]] == ["sinusoid_init", "inner_optimizer",
                                                           "fewshot_classification"]
