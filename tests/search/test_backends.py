"""Every search backend passes autometa.testing.check_backend (one line each)."""

import pytest

from autometa.testing import check_backend


def test_optuna_backend_conforms(tmp_path):
    check_backend("optuna", tmp_path)


def test_nni_backend_conforms(tmp_path):
    pytest.importorskip("nni")
    check_backend("nni", tmp_path)


def test_ray_backend_conforms(local_ray, tmp_path):
    check_backend("ray", tmp_path)
