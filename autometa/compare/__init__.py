"""Fair comparisons of hand-crafted and learned fillers of a slot: ``autometa compare``.

A comparison meta-trains every filler of one slot on the same task stream, once per seed, in
parallel worker processes, tests them on the same test tasks, and reports the paired
differences with intervals that respect tasks nested in seeds, and each filler's cost in CPU
seconds, FLOPs and peak memory of its own process. ``autometa report DIR`` re-renders a report.

This package is also callable: ``autometa.compare(...)`` is :func:`compare`.

Example::

    import autometa

    report = autometa.compare()                   # the offline quickstart
    report = autometa.compare("experiments/compare_inner_optimizer.yaml", "runs/inner-opt")
"""

import sys
import types

from autometa.compare._compare import compare, config_digest, filler_config, load_compare_config
from autometa.compare._quickstart import quickstart_config
from autometa.compare._report import print_table, render_report
from autometa.compare._stats import format_interval, format_p, nested_difference, nested_interval

__all__ = [
    "compare", "config_digest", "filler_config", "format_interval", "format_p", "load_compare_config",
    "nested_difference", "nested_interval", "print_table", "quickstart_config", "render_report",
]


class _CallableModule(types.ModuleType):
    """Lets ``autometa.compare(...)`` call :func:`compare` although ``autometa.compare`` is this package."""

    def __call__(self, *args, **kwargs):
        return compare(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
