"""The data-slot study through `autometa compare` (smoke tier) and its config validation."""

import hashlib
import json

import numpy as np
import pytest
import torch

from autometa.compare import compare
from autometa.compare._distillation import PUBLISHED, load_study_config
from autometa.compare._studies import study_name
from autometa.data import load_dataset
from autometa.errors import ConfigError

SMOKE = "experiments/distill_smoke.yaml"


def test_smoke_study_runs_every_filler_through_compare(tmp_path):
    result = compare(SMOKE, tmp_path / "out", quiet=True)
    summary = result["summary"]
    assert {s["arm"] for s in summary.values()} == {"random_real", "herding", "k_center", "forgetting", "dd", "dc",
                                                    "dsa", "dm", "mtt"}
    for s in summary.values():  # random_real's own eval_nets (3) overrides the study's (2)
        assert s["n"] == (3 if s["arm"] == "random_real" else 2)
        assert 0.0 <= s["mean"] <= 100.0 and s["fit_cpu_s_per_set"] >= 0.0
    assert summary["digits|1|random_real"]["mean"] > 20.0  # 10 classes: well above chance after 30 epochs
    out = tmp_path / "out"
    saved = load_dataset(str(out / "sets" / "digits_ipc1_dm_set0.npz"))
    assert saved.x.shape == (10, 1, 8, 8) and sorted(saved.y.tolist()) == list(range(10))
    assert (out / "sets" / "digits_ipc1_dm_set0.png").stat().st_size > 0
    assert "| digits | 1 | dc |" in (out / "summary.md").read_text()
    runs = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert len(runs) == 9
    # resumed: nothing is run again, the same numbers come back
    again = compare(SMOKE, tmp_path / "out", quiet=True)
    assert again["summary"] == summary
    opened = json.loads((out / "versions.json").read_text())  # one entry per opening: the run and its resume
    assert len(opened) == 2 and opened[0]["torch"] == torch.__version__ and "autometa" in opened[1]


def test_study_config_errors_are_reported_together():
    assert study_name(SMOKE) == "distillation"
    bad = {"study": "distillation", "datasets": ["cifar"], "ipc": [0], "eval_nets": 0, "epochz": 3, "device": "tpu",
           "precision": "fp8",
           "arms": {"a": {"filler": {"name": "dc", "iterashuns": 2}}, "b": {"evaluation": {}},
                    "c": {"filler": "random_real", "eval_nets": 0}}}
    with pytest.raises(ConfigError) as info:
        load_study_config(bad)
    message = str(info.value)
    for fragment in ("datasets must be", "ipc must be", "eval_nets must be", "unknown key 'epochz'",
                     "arm 'a'", "iterashuns", "arm 'b' must be a mapping with a `filler`", "reference must name",
                     "Got 'tpu'", "precision must be one of",
                     "arm 'c': eval_nets must be an integer >= 1. Got 0"):
        assert fragment in message


def test_published_numbers_are_those_of_the_issue():
    assert PUBLISHED[("mnist", "dc", 1)] == 91.7 and PUBLISHED[("mnist", "dc", 10)] == 97.4
    assert PUBLISHED[("fashion_mnist", "dc", 1)] == 70.5 and PUBLISHED[("fashion_mnist", "dc", 10)] == 82.3
    assert PUBLISHED[("mnist", "random_real", 1)] == 64.9 and PUBLISHED[("fashion_mnist", "random_real", 1)] == 51.4


def test_an_arm_starts_from_a_set_another_study_saved(tmp_path):
    # a warm start: `init` names a saved .npz; the study normalises it as the data and records its hash
    from autometa.compare._distillation import run_study

    base = {"study": "distillation", "datasets": ["digits"], "ipc": [2], "sets": [0], "eval_nets": 1,
            "evaluation": {"epochs": 1, "net": {"width": 4, "depth": 1}}, "reference": "a"}
    first = dict(base, arms={"a": {"filler": "random_real"}})
    run_study(first, tmp_path / "first", log=lambda m: None)
    start = tmp_path / "first" / "sets" / "digits_ipc2_a_set0.npz"
    warm = dict(base, arms={"a": {"filler": {"name": "dm", "iterations": 0, "init": str(start)}}})
    result = run_study(warm, tmp_path / "warm", log=lambda m: None)
    again = load_dataset(str(tmp_path / "warm" / "sets" / "digits_ipc2_a_set0.npz"))
    np.testing.assert_allclose(again.x, load_dataset(str(start)).x, atol=1e-5)  # 0 iterations: the start itself
    assert result["results"]["digits|2|a"][0]["init_sha256"] == hashlib.sha256(start.read_bytes()).hexdigest()
    with pytest.raises(ConfigError, match="does not exist"):
        load_study_config(dict(warm, arms={"a": {"filler": {"name": "dm", "init": str(tmp_path / "no.npz")}}}))
    with pytest.raises(ConfigError, match="a start for ipc=3 needs 3 of each of 10 classes"):
        run_study(dict(warm, ipc=[3]), tmp_path / "wrong_ipc", log=lambda m: None)


def test_first_net_adds_networks_to_a_set_without_repeating_the_ones_done(tmp_path):
    # networks first_net.. of a set are those a study with more eval_nets trains: same seeds, same accuracies
    from autometa.compare._distillation import run_study

    base = {"study": "distillation", "datasets": ["digits"], "ipc": [2], "sets": [1], "eval_nets": 3,
            "evaluation": {"epochs": 2, "net": {"width": 4, "depth": 1}}, "reference": "all"}
    study = dict(base, arms={"all": {"filler": "random_real"},
                             "more": {"filler": "random_real", "first_net": 2, "eval_nets": 1}})
    result = run_study(study, tmp_path / "out", log=lambda m: None)["results"]
    every, more = result["digits|2|all"][0], result["digits|2|more"][0]
    assert every["eval_seeds"] == [1000, 1001, 1002] and more["eval_seeds"] == [1002]
    assert more["accuracies"] == every["accuracies"][2:]
    # a folder written before `first_net` existed resumes as if it had the default
    config_path = tmp_path / "out" / "config.json"
    written = json.loads(config_path.read_text())
    del written["first_net"]
    config_path.write_text(json.dumps(written))
    assert run_study(study, tmp_path / "out", log=lambda m: None, resume=True)["results"] == result
    for bad, fragment in (({"first_net": -1}, "first_net must be an integer >= 0. Got -1"),
                          ({"first_net": 998}, "first_net \\+ eval_nets must be at most 1000 .*Got 998 \\+ 3")):
        with pytest.raises(ConfigError, match=fragment):
            load_study_config(dict(study, **bad))
    with pytest.raises(ConfigError, match="arm 'more': first_net \\+ eval_nets must be at most 1000 .*Got 999 \\+ 3"):
        load_study_config(dict(study, arms={**study["arms"], "more": {"filler": "random_real", "first_net": 999}}))


def test_pooled_folders_count_a_set_once_with_the_networks_another_study_added(tmp_path):
    # one study fits a set; another loads its saved file (iterations: 0) and adds network 2 under another arm name
    from autometa.compare._distillation import pool_runs, run_study, summarize

    quiet = {"log": lambda m: None}
    base = {"study": "distillation", "datasets": ["digits"], "ipc": [2], "sets": [1], "eval_nets": 2,
            "evaluation": {"epochs": 2, "net": {"width": 4, "depth": 1}}, "reference": "dm"}
    fit = dict(base, arms={"dm": {"filler": {"name": "dm", "iterations": 2, "batch_real": 8,
                                             "net": {"width": 4, "depth": 1}}}})
    fitted = run_study(fit, tmp_path / "fit", **quiet)["results"]["digits|2|dm"][0]
    saved = tmp_path / "fit" / "sets" / "digits_ipc2_dm_set1.npz"
    more = dict(base, first_net=2, eval_nets=1, reference="dm1",
                arms={"dm1": {"filler": {"name": "dm", "iterations": 0, "init": str(saved)}}})
    added = run_study(more, tmp_path / "more", **quiet)["results"]["digits|2|dm1"][0]
    config, results = pool_runs([tmp_path / "fit", tmp_path / "more"], {"dm1": "dm"})
    (pooled,) = results["digits|2|dm"]
    assert pooled["eval_seeds"] == [1000, 1001, 1002]
    assert pooled["accuracies"] == fitted["accuracies"] + added["accuracies"]
    summary = summarize(config, results)["digits|2|dm"]
    assert (summary["n"], summary["sets"]) == (3, 1) and summary["fit_cpu_s_per_set"] == fitted["fit_cpu_s"]
    assert set(pool_runs([tmp_path / "fit", tmp_path / "more"])[1]) == {"digits|2|dm", "digits|2|dm1"}
    with pytest.raises(ConfigError, match="2 of the folders .* fitted it"):
        pool_runs([tmp_path / "fit", tmp_path / "fit"])
    run_study(more, tmp_path / "more_again", **quiet)
    with pytest.raises(ConfigError, match=r"network seeds \[1000, 1001, 1002, 1002\] repeat"):
        pool_runs([tmp_path / "fit", tmp_path / "more", tmp_path / "more_again"], {"dm1": "dm"})
    other = dict(more, evaluation={**base["evaluation"], "epochs": 3})
    run_study(other, tmp_path / "other_protocol", **quiet)
    with pytest.raises(ConfigError, match="pooled networks must share both"):
        pool_runs([tmp_path / "fit", tmp_path / "other_protocol"], {"dm1": "dm"})
    saved.write_bytes(saved.read_bytes() + b"\0")  # the fitted folder's set is no longer the file that was scored
    with pytest.raises(ConfigError, match="not the same set"):
        pool_runs([tmp_path / "fit", tmp_path / "more"], {"dm1": "dm"})
