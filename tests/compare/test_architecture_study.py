"""The architecture study through `autometa compare` (issue 10): arms, equal-budget random search,
paired statistics over test images nested in seeds, costs, resume; the smoke tier of the study."""

import copy
import json

import numpy as np
import pytest

from autometa.compare import compare
from autometa.compare._architecture import (
    arm_architecture,
    load_architecture_study,
    search_budget,
)
from autometa.compare._stats import nested_difference, nested_interval
from autometa.compare._studies import study_name
from autometa.errors import ConfigError
from tests.conftest import needs_data

SMOKE = "experiments/architecture_smoke.yaml"


@needs_data("fashion_mnist.npz")
def test_smoke_study_pairs_arms_matches_the_random_search_budget_and_resumes(tmp_path):
    report = compare(SMOKE, tmp_path, workers=2, quiet=True)
    arms = report["arms"]
    assert list(arms) == ["darts_first", "random_search", "sep_conv_cell", "conv4"]
    runs = {(line["arm"], line["seed"]): line["result"] for line in map(json.loads, (tmp_path / "runs.jsonl").open())}
    assert len(runs) == 8
    for seed in (0, 1):  # random search spent (at least) the CPU time of the same seed's DARTS search
        darts, rand = runs[("darts_first", seed)], runs[("random_search", seed)]
        budget = search_budget(darts)
        assert 0 < budget < darts["search"]["cpu_s"]  # the diagnostics are not part of the budget
        assert rand["search"]["budget_cpu_s"] == pytest.approx(budget)
        assert rand["search"]["cpu_s"] >= budget and rand["search"]["trials"] >= 1
        trials = json.loads((tmp_path / "random_search" / f"seed{seed}" / "random_search.json").read_text())
        best = max(t["proxy_accuracy"] for t in trials["history"])
        assert trials["best"]["proxy_accuracy"] == best
        assert rand["architecture"]["seed"] == trials["best"]["cell_seed"]  # the winner is what was retrained
        assert darts["retrain"]["steps"] == rand["retrain"]["steps"] == 2
    values = {a: np.array([json.loads((tmp_path / a / f"seed{s}" / "test_values.json").read_text())["accuracy"]
                           for s in (0, 1)]) for a in arms}
    for name, entry in arms.items():
        assert values[name].shape == (2, 100)  # every arm on the same 100 official test images per seed
        assert entry["interval"] == nested_interval(values[name], bounds=(0.0, 1.0))
        assert entry["per_seed"] == {str(s): float(values[name][i].mean()) for i, s in enumerate((0, 1))}
        assert entry["cost"]["process_cpu_s"] > 0 and entry["cost"]["retrain_cpu_s"] > 0
        if name != "random_search":
            diff = nested_difference(values[name], values["random_search"])
            assert entry["vs_reference"]["mean"] == pytest.approx(diff["mean"])
            assert "no between-seed claim" in entry["vs_reference"]["verdict"]  # 2 seeds
    assert arms["sep_conv_cell"]["cost"]["search_cpu_s"] == 0 and arms["darts_first"]["cost"]["search_cpu_s"] > 0
    for name in ("report.json", "summary.md", "accuracy.png", "darts_first/seed0/genotype.yaml",
                 "darts_first/seed0/normal.png", "random_search/seed1/genotype.yaml"):
        assert (tmp_path / name).is_file(), name
    assert "DARTS 1st order + early stop" in (tmp_path / "summary.md").read_text()
    lines = (tmp_path / "runs.jsonl").read_text()
    again = compare(SMOKE, tmp_path, workers=2, quiet=True)  # every run reused, nothing recomputed
    assert (tmp_path / "runs.jsonl").read_text() == lines
    assert again["arms"]["darts_first"]["interval"] == arms["darts_first"]["interval"]


def test_study_configs_are_recognised_and_validated_as_a_whole():
    assert study_name(SMOKE) == "architecture"
    assert study_name("experiments/architecture_fashion_mnist.yaml") == "architecture"
    assert study_name("experiments/weighting_fashion_mnist.yaml") != "architecture"
    full = load_architecture_study("experiments/architecture_fashion_mnist.yaml")
    assert full["data"] == {"name": "fashion_mnist", "search_images": 20000, "test_images": 10000}
    assert len(full["seeds"]) >= 3
    bad = {"study": "architecture", "seed": 1, "data": {"name": "cifar", "search_image": 10},
           "reference": "nope", "random_search": {"proxy_steps": 0},
           "arms": {"rand": {"kind": "searched", "architecture": "random"},
                    "rand2": {"kind": "searched", "architecture": "random", "budget": "conv"},
                    "conv": {"kind": "learned", "architecture": "conv4", "budget": 3},
                    "d": {"kind": "hand-crafted", "architecture": {"name": "darts", "order": "third"}}}}
    with pytest.raises(ConfigError) as info:
        load_architecture_study(bad)
    message = str(info.value)
    for part in ("unknown key 'seed'", "data.name", "did you mean 'search_images'", "reference must name",
                 "random_search.proxy_steps", "arm 'rand': a random search needs a budget",
                 "arm 'rand2': budget must be CPU seconds or the name of a darts arm",
                 "arm 'conv' needs kind: searched or hand-crafted", "arm 'conv': only a searched random arm",
                 "arm 'd': architecture:", "order"):
        assert part in message, part


def test_the_cell_section_fills_only_the_arguments_a_filler_takes():
    config = copy.deepcopy(load_architecture_study(SMOKE))
    assert arm_architecture(config, config["arms"]["random_search"]) == {
        "primitives": "reduced", "init_channels": 4, "layers": 3, "name": "random"}
    assert arm_architecture(config, config["arms"]["sep_conv_cell"]) == {
        "init_channels": 4, "layers": 3, "name": "sep_conv_cell"}  # no primitives: a fixed cell
    assert arm_architecture(config, config["arms"]["conv4"]) == {"name": "conv4", "hidden": 16}
    config["arms"]["darts_first"]["architecture"]["layers"] = 5  # the arm's own value wins
    assert arm_architecture(config, config["arms"]["darts_first"])["layers"] == 5
