"""The reward study through ``autometa compare`` (smoke tiers: grid world, delayed-reward CartPole) and
``autometa report`` on the folders studies write."""

import json

import numpy as np
import pytest

import autometa
from autometa.cli import main
from autometa.compare._reward_study import load_study_config, run_study
from autometa.errors import ConfigError, ResultsDirError

TINY = {
    "study": "reward",
    "env": {"name": "gridworld", "size": 3, "max_steps": 10},
    "episodes": 4, "batches": 8, "threshold": 0.6, "window": 2,
    "trainer": {"lr": 2.0, "meta_lr": 0.05, "gamma": 0.9},
    "seeds": [0, 1],
    "reference": "extrinsic",
    "arms": {
        "extrinsic": {"kind": "hand-crafted", "reward": "extrinsic"},
        "count_bonus": {"kind": "hand-crafted", "reward": {"name": "count_bonus", "bonus": 0.1}},
        "reward_net": {"kind": "learned", "reward": {"name": "reward_net", "hidden": 4, "scale": 0.1}},
        "meta_gamma": {"kind": "learned", "reward": {"name": "meta_discount", "gamma": 0.8}},
        "gamma_1": {"kind": "hand-crafted", "reward": "extrinsic", "trainer": {"gamma": 1.0}},
    },
}


def _first_reached(returns, window, threshold):
    for i in range(window, len(returns) + 1):
        if np.mean(returns[i - window:i]) >= threshold:
            return i
    return None


def test_smoke_reward_study_through_compare_and_report(tmp_path, capsys):
    out = autometa.compare(TINY, tmp_path, quiet=True)  # through `autometa compare`
    results = out["results"]
    assert set(results) == set(TINY["arms"]) and all(len(runs) == 2 for runs in results.values())
    for arm, runs in results.items():
        for r in runs:
            first = _first_reached(r["returns"], 2, 0.6)
            # the run stops at the first batch whose window reaches the threshold, else at the cap
            assert len(r["returns"]) == (first if first is not None else 8)
            assert (r["steps_to_threshold"] is None) == (first is None)
            if first is not None:
                assert r["steps_to_threshold"] == r["steps"]
            assert ("gammas" in r) == (arm == "meta_gamma")
    outcomes = {r["steps_to_threshold"] is None for runs in results.values() for r in runs}
    assert outcomes == {True, False}  # this budget exercises both: reached and censored
    gammas = results["meta_gamma"][0]["gammas"]
    assert len(gammas) == len(results["meta_gamma"][0]["returns"]) and gammas[0] != pytest.approx(0.8, abs=1e-6)
    summary = out["summary"]
    for arm, runs in results.items():
        reached = [r["steps_to_threshold"] for r in runs if r["steps_to_threshold"] is not None]
        s = summary[arm]
        assert s["steps"]["n"] == len(reached) and s["not_reached"] == 2 - len(reached)
        # censored runs count at the steps they ran (a lower bound), reached ones at their steps to threshold
        assert s["steps_censored_at_cap"]["mean"] == pytest.approx(np.mean([r["steps_to_threshold"] or r["steps"]
                                                                            for r in runs]))
    # seeded and paired: a fresh directory reproduces a run exactly
    again = run_study({**TINY, "seeds": [1]}, tmp_path / "again", log=lambda _: None)
    assert again["results"]["reward_net"][0]["returns"] == results["reward_net"][1]["returns"]
    # not silently reused; resumed only with the same config
    with pytest.raises(ResultsDirError, match="--resume"):
        run_study(TINY, tmp_path, log=lambda _: None)
    with pytest.raises(ResultsDirError, match="different study config"):
        run_study({**TINY, "batches": 9}, tmp_path, log=lambda _: None, resume=True)
    assert run_study(TINY, tmp_path, log=lambda _: None, resume=True)["results"] == results
    # `autometa report DIR` re-renders the study's report from results.json alone
    for name in ("report.md", "summary.md", "reward_study.png"):
        (tmp_path / name).unlink()
    capsys.readouterr()
    assert main(["report", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "env steps to threshold" in printed and f"report: {tmp_path / 'report.md'}" in printed
    text = (tmp_path / "report.md").read_text()
    assert "meta_gamma (final gamma" in text and "![reward study](reward_study.png)" in text
    assert (tmp_path / "reward_study.png").is_file()


def test_smoke_delayed_cartpole_study():
    pytest.importorskip("gymnasium")
    config = {**TINY, "env": {"name": "delayed_cartpole", "delay": 20, "max_steps": 30}, "batches": 2,
              "threshold": 1000, "seeds": [0],
              "arms": {"extrinsic": TINY["arms"]["extrinsic"],
                       "binned": {"kind": "hand-crafted", "reward": {"name": "binned_count_bonus", "bins": 4,
                                                                     "low": [-2.4, -3, -0.21, -3.5],
                                                                     "high": [2.4, 3, 0.21, 3.5]}},
                       "reward_net": TINY["arms"]["reward_net"]}}
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = run_study(config, tmp, log=lambda _: None)
    for runs in out["results"].values():
        (r,) = runs
        assert r["steps_to_threshold"] is None and len(r["returns"]) == 2  # censored at the cap
        assert 2 * 4 * 8 <= r["steps"] <= 2 * 4 * 30  # 2 batches of 4 episodes; CartPole lasts >= 8 steps
    assert out["summary"]["binned"]["not_reached"] == 1 and out["summary"]["binned"]["steps"]["mean"] is None


def test_reward_study_config_reports_every_problem_at_once():
    bad = {"study": "reward", "episode": 3, "env": {"name": "gridwrold"}, "reference": "base", "seeds": [0, 0],
           "arms": {"ext": {"kind": "hand-made", "reward": "extrinsic"},
                    "net": {"kind": "learned", "reward": "reward_nett", "trainr": {}}}}
    with pytest.raises(ConfigError) as info:
        load_study_config(bad)
    message = str(info.value)
    for part in ("unknown key 'episode'", "did you mean 'episodes'", "Unknown env 'gridwrold'", "did you mean "
                 "'gridworld'", "distinct integers", "reference must name one of the arms", "kind: hand-crafted or "
                 "learned", "unknown key 'trainr'"):
        assert part in message, part
    # with a valid environment, the arms' fillers are built too
    with pytest.raises(ConfigError, match="did you mean 'reward_net'"):
        load_study_config({**TINY, "arms": {**TINY["arms"], "bad": {"kind": "learned", "reward": "reward_nett"}}})


def test_compare_names_the_studies_for_an_unknown_one(tmp_path):
    with pytest.raises(ConfigError, match=r"Unknown study 'rewards'.*did you mean 'reward'"):
        autometa.compare({**TINY, "study": "rewards"}, tmp_path, quiet=True)


def test_report_renders_a_noisy_label_study_folder_written_before_configs_named_the_study(tmp_path):
    """`autometa report` on a noisy-label study's folder (no report.json; an old results.json without `study`)."""
    from autometa.compare._noisy_labels import DEFAULTS

    config = {k: v for k, v in DEFAULTS.items() if k != "study"}
    config.update(seeds=[0, 1], arms={"uniform_ce": {"kind": "hand-crafted"}, "mwn": {"kind": "learned"}})
    run = lambda seed, acc: {"seed": seed, "final": acc, "best": acc + 0.01, "early_stopped": acc, "cpu_s": 1.0,
                             "epochs": []}
    results = {"uniform-40%": {"uniform_ce": [run(0, 0.80), run(1, 0.82)], "mwn": [run(0, 0.81), run(1, 0.84)]}}
    (tmp_path / "results.json").write_text(json.dumps({"config": config, "summary": {}, "results": results}))
    assert main(["report", str(tmp_path)]) == 0
    text = (tmp_path / "report.md").read_text()
    assert "| uniform-40% | mwn | 2 | 82.50 ± 19.06 |" in text  # mean 82.5, t(1) 12.71 * 1.5 (std of the two)
    assert "mwn vs uniform_ce: final +1.50 ± 6.35" in text
    assert "final" in (tmp_path / "summary.md").read_text()
    with pytest.raises(ConfigError, match="neither report.json nor a study"):
        autometa.compare.render_report(tmp_path / "nothing")


def test_compare_overwrite_replaces_a_study_and_a_changed_config_is_refused_without_it(tmp_path, capsys):
    small = {**TINY, "batches": 2, "seeds": [0], "arms": {k: TINY["arms"][k] for k in ("extrinsic", "gamma_1")}}
    autometa.compare(small, tmp_path, quiet=True)
    assert capsys.readouterr().out.splitlines() == [f"report: {tmp_path / 'report.md'}"]  # quiet: only the path
    changed = {**small, "batches": 3}
    with pytest.raises(ResultsDirError, match="different study config"):
        autometa.compare(changed, tmp_path, quiet=True)  # compare resumes a study only with the same config
    out = autometa.compare(changed, tmp_path, quiet=True, overwrite=True)
    assert len(out["results"]["extrinsic"][0]["returns"]) == 3
    assert json.loads((tmp_path / "config.json").read_text())["batches"] == 3
