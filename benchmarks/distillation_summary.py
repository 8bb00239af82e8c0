"""Summarise the finished runs of distillation studies (``runs.jsonl``), also while a study is still running,
and pool studies that added evaluation networks to a set another study fitted.

``autometa compare`` writes ``summary.md`` only when every run of a study is done; this prints the same
table from whatever runs have finished, so a study cut short by a CPU budget still reports what it measured.
Runs of the same (dataset, ipc, arm) in several folders pool. A set scored in two folders (one fitted it, the
other loaded its saved file with ``iterations: 0`` and ``first_net: K``) counts once, with all its networks,
after checking that it is the same file, filler and protocol and that no network is counted twice
(:func:`autometa.compare._distillation.pool_runs`). ``--alias NEW=OLD`` pools an arm named differently in the
folder that added networks (e.g. ``dc1=dc``).

Usage::

    python benchmarks/distillation_summary.py benchmarks/distillation/mnist_ipc1_budget [...] [--json OUT]
    python benchmarks/distillation_summary.py benchmarks/distillation/mnist_dc_ipc10_cpu \\
        benchmarks/distillation/mnist_dc_ipc10_set1_cpu benchmarks/distillation/mnist_dc_ipc10_more3_nets_cpu \\
        --alias dc0=dc --alias dc1=dc
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from autometa.compare._distillation import format_table, pool_runs, summarize


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dirs", nargs="+", type=Path)
    parser.add_argument("--alias", action="append", default=[], metavar="NEW=OLD",
                        help="count arm NEW's runs as arm OLD's (repeatable)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if bad := [a for a in args.alias if a.count("=") != 1 or "" in a.split("=")]:
        parser.error(f"--alias takes NEW=OLD, e.g. dc1=dc. Got {bad}")
    config, results = pool_runs(args.dirs, dict(a.split("=") for a in args.alias))
    merged = summarize(config, results)
    for key, entry in merged.items():
        runs = results[key]
        entry["sets_done"] = [r["filler"]["seed"] for r in runs]
        entry["accuracies"] = [a for r in runs for a in r["accuracies"]]
        entry["per_set"] = [{"set": r["filler"]["seed"], "accuracies": r["accuracies"], "eval_seeds": r["eval_seeds"],
                             "mean": 100 * sum(r["accuracies"]) / len(r["accuracies"]),
                             "fit_cpu_s": r["fit_cpu_s"], "fit_wall_s": r.get("fit_wall_s"),
                             "eval_cpu_s": r["eval_cpu_s"], "eval_wall_s": r.get("eval_wall_s"),
                             "loss_first": r["loss_first"], "loss_last": r["loss_last"],
                             "iterations": r["iterations"], "evaluation": r["protocol"],
                             "budget_stop": r.get("budget_stop"), "init_sha256": r.get("init_sha256"),
                             "pooled_from": r["pooled_from"]}
                            for r in runs]
    print(format_table(merged))
    if args.json is not None:
        args.json.write_text(json.dumps(merged, indent=2))


if __name__ == "__main__":
    main()
