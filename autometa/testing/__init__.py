"""Conformance suites shipped with autometa, so that a backend (later a learner or filler) is tested by one line.

Example::

    from autometa.testing import check_backend

    def test_my_backend():
        check_backend("optuna")
"""

from autometa.testing._backends import check_backend

__all__ = ["check_backend"]
