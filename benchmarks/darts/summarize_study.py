"""Summarize an architecture study directory from its finished runs (``runs.jsonl``), also when it is incomplete.

``autometa compare`` writes ``report.json`` and ``summary.md`` only when every (arm, seed) has run;
this computes the same statistics (:func:`autometa.compare._architecture.summarize`) over the seeds
for which every arm has finished, and says which runs are missing.

    python benchmarks/darts/summarize_study.py benchmarks/darts/architecture_study
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from autometa.compare._architecture import format_table, summarize


def main(path: str) -> None:
    out = Path(path)
    config = json.loads((out / "config.json").read_text())
    done = {}
    for line in (out / "runs.jsonl").read_text().splitlines():
        entry = json.loads(line)
        done[(entry["arm"], entry["seed"])] = entry["result"]
    seeds = [s for s in config["seeds"] if all((a, s) in done for a in config["arms"])]
    missing = [f"{a}/seed{s}" for s in config["seeds"] for a in config["arms"] if (a, s) not in done]
    print(f"complete seeds: {seeds}; missing runs: {missing or 'none'}")
    if not seeds:
        return
    runs = {a: [done[(a, s)] | {"seed": s} for s in seeds] for a in config["arms"]}
    values = {a: np.array([json.loads((out / a / f"seed{s}" / "test_values.json").read_text())["accuracy"]
                           for s in seeds], dtype=np.float64) for a in config["arms"]}
    report = summarize({**config, "seeds": seeds}, runs, values)
    report["missing_runs"] = missing
    (out / "partial_report.json").write_text(json.dumps(report, indent=2))
    print(format_table(report))


if __name__ == "__main__":
    main(sys.argv[1])
