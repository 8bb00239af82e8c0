"""Write a copy of a run or comparison config with dotted overrides (used by gpu_jobs.sh).

    python benchmarks/modelbased/gpu_config.py SRC.yaml OUT.yaml run.device=cuda run.time_budget_s=300 \
        fillers.feedforward.run.time_budget_s=60

For a comparison config (one with ``comparisons:``) a key applies to every comparison's ``base``;
a key ``fillers.NAME.<key>`` applies to that filler of every comparison (an override there wins
over the base, as in ``autometa compare``). For a run config a key applies to the config itself.
Values are read as YAML (``300`` is a number, ``true`` a boolean, ``cuda`` a string).
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml


def set_path(config: dict, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    for key in parents:
        config = config.setdefault(key, {})
        if not isinstance(config, dict):
            raise SystemExit(f"gpu_config: {dotted!r} goes through {key!r}, which is not a mapping")
    config[last] = value


def main(argv: list[str]) -> None:
    if len(argv) < 2:
        raise SystemExit(__doc__)
    source, target, *pairs = argv
    config = yaml.safe_load(Path(source).read_text())
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep:
            raise SystemExit(f"gpu_config: overrides are KEY=VALUE; got {pair!r}")
        value = yaml.safe_load(text)
        if "comparisons" not in config:
            set_path(config, key, value)
            continue
        for comp in config["comparisons"]:
            if key.startswith("fillers."):
                name, _, rest = key[len("fillers."):].partition(".")
                if name not in comp["fillers"]:
                    raise SystemExit(f"gpu_config: comparison {comp['name']!r} has no filler {name!r}")
                set_path(comp["fillers"][name], rest, value)
            else:
                set_path(comp["base"], key, value)
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    Path(target).write_text(yaml.safe_dump(config, sort_keys=False, width=120))


if __name__ == "__main__":
    main(sys.argv[1:])
