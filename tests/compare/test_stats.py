"""The intervals of a comparison against simulations with known truth."""

import numpy as np
import pytest

from autometa.compare._stats import format_interval, format_p, nested_difference, nested_interval, paired_difference


def _simulate(rng, sims, seeds, tasks, truth, seed_sd, task_sd):
    """Paired comparisons: a shared task difficulty, a seed effect per filler and seed, task noise."""
    difficulty = rng.normal(0, 0.15, size=(sims, 1, tasks))  # identical test tasks for both fillers
    def filler(mean):
        return (mean + difficulty + rng.normal(0, seed_sd, size=(sims, seeds, 1))
                + rng.normal(0, task_sd, size=(sims, seeds, tasks)))
    return filler(0.6 + truth), filler(0.6)


@pytest.mark.parametrize("seeds", [3, 5, 10])
def test_interval_of_a_paired_difference_covers_the_truth_95_percent(seeds):
    rng = np.random.default_rng(seeds)
    truth = 0.03
    candidate, reference = _simulate(rng, sims=2000, seeds=seeds, tasks=60, truth=truth, seed_sd=0.04,
                                     task_sd=0.1)
    out = nested_difference(candidate, reference)
    covered = (out["low"] <= truth) & (truth <= out["high"])
    assert out["level"] == "seeds"
    assert 0.92 <= covered.mean() <= 0.98, covered.mean()
    # and the test rejects a zero difference in about 5% of comparisons where there is none
    same = nested_difference(*_simulate(rng, sims=2000, seeds=seeds, tasks=60, truth=0.0, seed_sd=0.04,
                                        task_sd=0.1))
    assert 0.02 <= same["significant"].mean() <= 0.08
    assert 0.02 <= (same["p_value"] < 0.05).mean() <= 0.08


def test_interval_of_a_mean_covers_the_truth_95_percent():
    rng = np.random.default_rng(7)
    values = 0.6 + rng.normal(0, 0.05, size=(1500, 4, 1)) + rng.normal(0, 0.2, size=(1500, 4, 100))
    out = nested_interval(values)
    covered = (out["low"] <= 0.6) & (0.6 <= out["high"])
    assert 0.92 <= covered.mean() <= 0.98, covered.mean()


def test_accuracy_intervals_stay_inside_0_and_100_percent():
    rng = np.random.default_rng(3)
    # three seeds far apart, one near perfect: the symmetric t interval would pass 100%
    seed_p = np.array([0.99, 0.93, 0.75])[:, None]
    values = rng.binomial(25, np.broadcast_to(seed_p, (3, 600))) / 25
    out = nested_interval(values, bounds=(0.0, 1.0))
    unbounded = nested_interval(values)
    assert unbounded["high"] > 1.0  # the case this guards against does occur
    assert 0.0 <= out["low"] <= out["mean"] <= out["high"] <= 1.0
    perfect = nested_interval(np.ones((2, 50)), bounds=(0.0, 1.0))
    assert perfect["low"] == perfect["high"] == 1.0
    batch = nested_interval(rng.binomial(5, rng.uniform(0.5, 1.0, size=(500, 3, 1)), size=(500, 3, 40)) / 5,
                            bounds=(0.0, 1.0))
    assert (batch["low"] >= 0).all() and (batch["high"] <= 1).all()


def test_fewer_than_three_seeds_make_no_between_seed_claim():
    rng = np.random.default_rng(1)
    a = rng.normal(0.7, 0.1, size=(2, 300))
    out = nested_difference(a + 0.1, a)
    assert out["level"] == "tasks" and not out["significant"] and out["significant_given_seeds"]
    assert nested_interval(a)["level"] == "tasks"
    assert nested_interval(rng.normal(size=(3, 10)))["level"] == "seeds"


def test_identical_fillers_differ_by_exactly_zero():
    a = np.random.default_rng(2).random((4, 30))
    out = nested_difference(a, a)
    assert out["mean"] == 0 and out["p_value"] == 1.0 and not out["significant"]


def test_p_values_print_as_bounds_never_zero():
    assert format_p(0.0) == "p < 0.001" and format_p(1e-12) == "p < 0.001"
    assert format_p(0.0123) == "p = 0.012" and format_p(0.5) == "p = 0.50" and format_p(None) == "p n/a"
    exact = nested_difference(np.ones((3, 5)), np.zeros((3, 5)))  # a difference without any noise
    assert exact["significant"] and format_p(exact["p_value"]) == "p < 0.001"


def test_format_interval():
    assert format_interval({"mean": 0.6239, "low": 0.551, "high": 0.6968}, scale=100) == "62.39 [55.10, 69.68]"
    assert format_interval({"mean": 0.5, "low": None, "high": None}) == "0.50"


def test_paired_difference_of_flat_samples():
    rng = np.random.default_rng(2)
    ref = rng.random(100)
    out = paired_difference(ref + 0.1 + 0.01 * rng.normal(size=100), ref)
    assert out["significant"] and out["p_value"] < 1e-10 and out["mean"] == pytest.approx(0.1, abs=0.01)
    same = paired_difference(ref, ref)
    assert same["mean"] == 0 and same["ci95"] == 0 and not same["significant"] and same["p_value"] == 1.0
    noise = paired_difference(rng.normal(size=30), rng.normal(size=30))
    assert noise["p_value"] > 0.05 and not noise["significant"]
