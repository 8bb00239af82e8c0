"""Issue 14: tables of the three model-based comparisons against the published numbers.

Reads the directories written by

    autometa compare experiments/compare_mann_omniglot.yaml    --out runs/mann
    autometa compare experiments/compare_metanet_omniglot.yaml --out runs/metanet
    autometa compare experiments/compare_cnaps_omniglot.yaml   --out runs/cnaps

and writes benchmarks/modelbased/results.json (or ``--json``) plus a markdown table on stdout. Per-instance
accuracies of the sequence learners come from each run's test_values.json (600 test episodes,
mean and 95% interval over episodes with the seed fixed, the same interval `autometa compare` uses).

    python benchmarks/modelbased/summarize.py [--runs runs] [--json results.json]

The GPU script (gpu_jobs.sh) writes the same layout into its OUTDIR: ``--runs OUTDIR``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from autometa.compare._stats import nested_interval

PUBLISHED_MANN = {  # Santoro et al. 2016, Table 1 (Omniglot, 5 classes, instances 1, 2, 3, 4, 5, 10)
    "mann": [36.4, 82.8, 91.0, 92.6, 94.9, None, None, None, None, 98.1],
    "lstm": [24.4, 49.5, 55.3, 61.0, 63.6, None, None, None, None, 62.5],
    "feedforward": [24.4, 19.6, 21.1, 19.9, 22.8, None, None, None, None, 19.5],
}
PUBLISHED_FEW_SHOT = {"metanet": {"5w1s": 98.95},  # Munkhdalai & Yu 2017; Snell et al. 2017 (Vinyals split)
                      "protonet": {"5w1s": 98.8, "5w5s": 99.7, "20w1s": 96.0, "20w5s": 98.9}}


def interval(values) -> dict:
    out = nested_interval(np.asarray([values], dtype=np.float64), bounds=(0.0, 1.0))
    return {"mean": 100 * out["mean"], "low": 100 * out["low"], "high": 100 * out["high"], "n": len(values)}


def fmt(entry: dict | None) -> str:
    if entry is None:
        return "-"
    return f"{entry['mean']:.1f} [{entry['low']:.1f}, {entry['high']:.1f}]"


def run_dirs(comp_dir: Path):
    for filler_dir in sorted(p for p in comp_dir.iterdir() if p.is_dir() and p.name != "tuning"):
        run = filler_dir / "seed0"
        if (run / "results.json").is_file() and (run / "test_values.json").is_file():
            yield filler_dir.name, json.loads((run / "results.json").read_text()), \
                json.loads((run / "test_values.json").read_text())


def budget(results: dict) -> dict:
    return {"meta_steps": results["steps"], "meta_batch": results.get("meta_batch"),
            "episodes": results["steps"] * (results.get("meta_batch") or 0),
            "meta_train_cpu_s": results.get("meta_train_cpu_time_s"),
            "meta_train_wall_s": results.get("meta_train_time_s"), "out_of_time": results.get("out_of_time"),
            "device": results.get("device"), "test_tasks": results.get("test", {}).get("accuracy", {}).get("n")}


def cost(entry: dict) -> str:
    """``wall s / CPU s on device`` of meta-training."""
    return (f"{entry['meta_train_wall_s'] or 0:.0f} / {entry['meta_train_cpu_s'] or 0:.0f} s"
            f"{' on ' + entry['device'] if entry.get('device') else ''}")


def mann_table(root: Path, out: dict) -> list[str]:
    comp = root / "mann" / "mann_omniglot"
    if not comp.is_dir():
        return ["(no MANN comparison found)"]
    lines = ["| learner | episodes (meta-train wall / CPU s) | "
             + " | ".join(f"inst. {k}" for k in (1, 2, 3, 4, 5, 10)) + " | all steps |",
             "| --- | --- | " + " | ".join("---" for _ in range(7)) + " |"]
    out["mann"] = {}
    for name, results, values in run_dirs(comp):
        acc = {k: interval(values[f"accuracy_{k}"]) for k in range(1, 11) if f"accuracy_{k}" in values}
        out["mann"][name] = {"per_instance": acc, "accuracy": interval(values["accuracy"]), **budget(results)}
        b = out["mann"][name]
        lines.append(f"| {name} (here) | {b['episodes']:,} ({cost(b)}) | "
                     + " | ".join(fmt(acc.get(k)) for k in (1, 2, 3, 4, 5, 10)) + f" | {fmt(b['accuracy'])} |")
        pub = PUBLISHED_MANN.get(name)
        if pub:
            lines.append(f"| {name} (Santoro et al. 2016) | 100,000 | "
                         + " | ".join(f"{pub[k - 1]}" for k in (1, 2, 3, 4, 5, 10)) + " | - |")
    return lines


def few_shot_table(root: Path, study: str, out: dict) -> list[str]:
    base = root / study
    if not base.is_dir():
        return [f"(no {study} comparison found)"]
    lines = ["| comparison | learner | accuracy % [95% CI] | published | meta-steps x tasks (wall / CPU s) |",
             "| --- | --- | --- | --- | --- |"]
    out[study] = {}
    for comp in sorted(p for p in base.iterdir() if p.is_dir() and p.name != "plots"):
        setting = comp.name.rsplit("_", 1)[-1]
        out[study][comp.name] = {}
        for name, results, values in run_dirs(comp):
            entry = {"accuracy": interval(values["accuracy"]), **budget(results)}
            out[study][comp.name][name] = entry
            published = PUBLISHED_FEW_SHOT.get(name, {}).get(setting)
            lines.append(f"| {comp.name} | {name} | {fmt(entry['accuracy'])} | {published or '-'} | "
                         f"{entry['meta_steps']} x {entry['meta_batch']} ({cost(entry)}) |")
        report = comp.parent / "report.json"
        if report.is_file():
            for c in json.loads(report.read_text())["comparisons"]:
                if c["name"] == comp.name:
                    out[study][comp.name]["differences"] = {
                        f: {k: c["fillers"][f]["vs_reference"][k] for k in ("mean", "low", "high", "p_value")}
                        for f in c["fillers"] if "vs_reference" in c["fillers"][f]}
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="runs", help="folder holding mann/, metanet/, cnaps/")
    parser.add_argument("--json", default=str(Path(__file__).with_name("results.json")),
                        help="where to write the numbers (default: benchmarks/modelbased/results.json)")
    args = parser.parse_args()
    root, out = Path(args.runs), {}
    print("## MANN (per-instance accuracy, 600 test episodes of the evaluation alphabets)\n")
    print("\n".join(mann_table(root, out)))
    for study in ("metanet", "cnaps"):
        print(f"\n## {study}\n")
        print("\n".join(few_shot_table(root, study, out)))
    pretrain = root / "pretrain" / "results.json"
    if pretrain.is_file():  # the backbone gpu_jobs.sh pre-trains for the CNAPs comparison
        r = json.loads(pretrain.read_text())
        acc = r["test"]["accuracy"]
        out["pretrain"] = {**budget(r), "test_accuracy": acc}
        print(f"\n## backbone pre-training\n\n{r['steps']} steps x {r['meta_batch']} tasks ({cost(out['pretrain'])}); "
              f"fine-tuning test accuracy {100 * acc['mean']:.1f} +- {100 * acc['ci95']:.1f} over {acc['n']} episodes")
    path = Path(args.json)
    path.write_text(json.dumps(out, indent=2))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
