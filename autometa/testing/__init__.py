"""Conformance suites shipped with autometa, for its own components and for yours.

``check_filler`` checks a filler of any slot in one call (see :mod:`autometa.testing._fillers`).
"""

from autometa.testing._fillers import check_filler

__all__ = ["check_filler"]
