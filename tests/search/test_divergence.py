"""A trial whose run diverges is recorded as diverged (pruned, with params, step and remedy); the sweep goes on."""

import argparse
import copy
import json

import pytest
import yaml

import autometa.search
from autometa.errors import NumericalError
from autometa.search._cli import add_sweep_parser

SPACE = {"x": {"float": [-3.0, 3.0]}}


def objective(trial):
    x = trial.params["x"]
    for step in range(3):
        trial.report(x * x + step, step)
    if trial.number % 3 == 1:
        error = NumericalError(f"the meta-gradient was inf at step 7 (x={x})")
        error.step = 7
        raise error
    if trial.number % 3 == 2:
        return float("inf")
    return x * x


def check_divergence(result):
    states = {t.number: t.state for t in result.trials}
    assert sorted(states) == list(range(12)) and set(states.values()) == {"complete", "pruned"}
    for t in result.trials:
        x, kind = t.params["x"], t.number % 3
        if kind == 0:
            assert t.state == "complete" and t.value == pytest.approx(x * x) and t.error is None
            continue
        assert t.state == "pruned" and t.values is None, t
        assert t.user_attrs["diverged_at_step"] == (7 if kind == 1 else None)
        assert t.error.startswith(f"diverged {'at step 7' if kind == 1 else '(step unknown)'} with x=")
        assert "lower the upper bound of the learning rates" in t.error and "\n" not in t.error


@pytest.mark.parametrize("backend", ["optuna", "nni"])
def test_diverging_trials_are_pruned_with_step_and_remedy_and_the_search_goes_on(backend):
    if backend == "nni":
        pytest.importorskip("nni")
    check_divergence(autometa.search(objective, SPACE, backend=backend, n_trials=12, sampler="random", seed=0))


def test_diverging_trials_on_ray(local_ray):
    pytest.importorskip("ray.tune")
    check_divergence(autometa.search(objective, SPACE, backend="ray", n_trials=12, sampler="random", seed=0))


def test_a_config_sweep_stops_a_diverging_run_at_validation_and_counts_it(tmp_path, capsys):
    from tests.search.test_cli import TINY

    config = copy.deepcopy(TINY)
    config["outer"]["optimizer"] = "sgd"
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "s.yaml").write_text(yaml.safe_dump({"outer.lr": {"choice": [1e-3, 1e9]}}))
    parser = argparse.ArgumentParser()
    add_sweep_parser(parser.add_subparsers())
    args = parser.parse_args(["sweep", str(tmp_path / "c.yaml"), "--space", str(tmp_path / "s.yaml"), "--trials", "6",
                              "--sampler", "random", "--out", str(tmp_path / "out")])
    assert args.func(args) == 0
    sweep = json.loads((tmp_path / "out" / "sweep.json").read_text())
    diverged = [t for t in sweep["trials"] if t["params"]["outer.lr"] == 1e9]
    assert diverged and all(t["state"] == "pruned" and t["user_attrs"]["diverged_at_step"] == 2 for t in diverged)
    # the run loop stops at the first non-finite training loss, before validation sees it
    assert all("diverged at step 2" in t["error"] and "nan" in t["error"] for t in diverged)
    assert all(t["state"] == "complete" for t in sweep["trials"] if t["params"]["outer.lr"] == 1e-3)
    captured = capsys.readouterr()
    assert captured.err.count("diverged at step 2 with outer.lr=1e+09") == len(diverged)
    assert f"'diverged': {len(diverged)}" in captured.out and "Traceback" not in captured.err
