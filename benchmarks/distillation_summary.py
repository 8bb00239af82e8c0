"""Summarise the finished runs of distillation studies (``runs.jsonl``), also while a study is still running.

``autometa compare`` writes ``summary.md`` only when every run of a study is done; this prints the same
table from whatever runs have finished, so a study cut short by a CPU budget still reports what it measured.

Usage::

    python benchmarks/distillation_summary.py benchmarks/distillation/mnist_ipc1_budget [...] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from autometa.compare._distillation import format_table, summarize


def collect(out_dir: Path) -> tuple[dict, dict]:
    config = json.loads((out_dir / "config.json").read_text())
    results: dict = {}
    for line in (out_dir / "runs.jsonl").read_text().splitlines() if (out_dir / "runs.jsonl").exists() else []:
        entry = json.loads(line)
        results.setdefault(f"{entry['dataset']}|{entry['ipc']}|{entry['arm']}", []).append(entry["result"])
    return config, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dirs", nargs="+", type=Path)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    arms: dict = {}
    results: dict = {}
    for out_dir in args.dirs:  # runs of the same (dataset, ipc, arm) in several studies are pooled
        config, found = collect(out_dir)
        arms.update(config["arms"])
        for key, runs in found.items():
            results.setdefault(key, []).extend(runs)
    merged = summarize({"arms": arms}, results)
    for key, entry in merged.items():
        entry["sets_done"] = [r["filler"]["seed"] for r in results[key]]
        entry["accuracies"] = [a for r in results[key] for a in r["accuracies"]]
        entry["per_set"] = [{"set": r["filler"]["seed"], "accuracies": r["accuracies"], "fit_cpu_s": r["fit_cpu_s"],
                             "eval_cpu_s": r["eval_cpu_s"], "loss_first": r["loss_first"],
                             "loss_last": r["loss_last"],
                             "iterations": r["iterations"], "evaluation": r["protocol"],
                             "fit_wall_s": r.get("fit_wall_s"), "eval_wall_s": r.get("eval_wall_s"),
                             "budget_stop": r.get("budget_stop")}
                            for r in results[key]]
    print(format_table(merged))
    if args.json is not None:
        args.json.write_text(json.dumps(merged, indent=2))


if __name__ == "__main__":
    main()
