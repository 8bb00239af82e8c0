import numpy as np
import pytest

from autometa.experiment import format_ci, mean_ci, paired_difference


def test_mean_ci_known_answer():
    # n=4, mean 2.5, sd = 1.2910, t(0.975, 3) = 3.1824 -> half-width 2.0543
    out = mean_ci([1, 2, 3, 4])
    assert out["mean"] == 2.5 and out["n"] == 4
    assert out["ci95"] == pytest.approx(3.182446 * 1.290994 / 2, rel=1e-5)


def test_large_sample_ci_approaches_normal():
    x = np.random.default_rng(0).normal(size=10000)
    assert mean_ci(x)["ci95"] == pytest.approx(1.96 * x.std(ddof=1) / 100, rel=1e-3)


def test_single_value_has_no_interval():
    assert mean_ci([0.5]) == {"mean": 0.5, "ci95": None, "std": None, "n": 1}
    assert format_ci(mean_ci([0.5])) == "0.50"


def test_zero_paired_difference_is_not_significant():
    a = np.random.default_rng(1).random(50)
    out = paired_difference(a, a)
    assert out["mean"] == 0 and out["ci95"] == 0 and not out["significant"] and out["p_value"] == 1.0


def test_clear_paired_difference_is_significant():
    rng = np.random.default_rng(2)
    ref = rng.random(100)
    out = paired_difference(ref + 0.1 + 0.01 * rng.normal(size=100), ref)
    assert out["significant"] and out["p_value"] < 1e-10 and out["mean"] == pytest.approx(0.1, abs=0.01)


def test_noise_difference_is_not_significant():
    rng = np.random.default_rng(3)
    out = paired_difference(rng.normal(size=30), rng.normal(size=30))
    assert out["p_value"] > 0.05 and not out["significant"]


def test_format():
    assert format_ci({"mean": 0.9812, "ci95": 0.0031}, scale=100) == "98.12 ± 0.31"
