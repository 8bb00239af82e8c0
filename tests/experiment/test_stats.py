import numpy as np
import pytest

from autometa.experiment import format_ci, mean_ci


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


def test_format():
    assert format_ci({"mean": 0.9812, "ci95": 0.0031}, scale=100) == "98.12 ± 0.31"
