"""Horizon bias of learned fillers: re-test every run of an ``autometa compare`` at longer inner loops.

A learned loss (or optimizer) is meta-trained through ``T`` unrolled inner steps; nothing makes it
good beyond them (Wu et al. 2018, "Understanding Short-Horizon Bias in Stochastic
Meta-Optimization"). This script takes a finished comparison directory, rebuilds each filler's
learner from its run's ``config.yaml`` and checkpoint (``best.pt``; fillers with nothing to learn
have none and are rebuilt from their seed), sets ``learner.eval_inner_steps`` to ``factor * T``
and tests it on the run's own test tasks (same test seed, checked by digest), so differences to
the reference filler stay paired per task. Nothing in the comparison directory is changed except
the three outputs below.

    python benchmarks/loss_horizon.py runs/compare_loss_supervised --factors 1 5 20

Writes ``horizon.json`` (per comparison, filler and factor: mean ± 95% CI over seeds and over
tasks, the paired difference to the reference), ``horizon.md`` (a table) and ``horizon.png`` into
the comparison directory, and prints the table.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from autometa.compare._stats import paired_difference
from autometa.experiment._config import load_config
from autometa.experiment._run import build_experiment, evaluate, load_checkpoint
from autometa.experiment._stats import format_ci, mean_ci

_CACHE: dict[str, tuple[dict, str]] = {}


def test_values(run_dir: Path, steps: int, test_tasks: int | None = None) -> tuple[dict, str]:
    """Per-task test metrics of one run's learner adapted with ``steps`` inner steps, and the tasks' digest.

    ``test_tasks`` tests only the first tasks of the run's test stream (the same tasks for every filler).
    """
    config = load_config(yaml.safe_load((run_dir / "config.yaml").read_text()))
    config["run"]["validate_every"] = 0
    config["learner"]["eval_inner_steps"] = steps
    run = config["run"]
    count = min(test_tasks or run["test_tasks"], run["test_tasks"])
    checkpoint = run_dir / "checkpoints" / "best.pt"
    # a learner with nothing learned that starts every task from a task-seeded init (reinit) gives the
    # same numbers for every seed: test it once
    key = None if checkpoint.exists() or not config["learner"].get("reinit") else json.dumps(
        {**config, "seed": None, "run": {**run, "progress": None}, "count": count}, sort_keys=True)
    if key in _CACHE:
        return _CACHE[key]
    exp = build_experiment(config)
    if checkpoint.exists():
        exp.learner.load_state_dict(load_checkpoint(checkpoint)["learner"])
    elif any(p.requires_grad for p in exp.learner.parameters()):
        raise FileNotFoundError(f"{checkpoint} is missing but the learner of {run_dir} has meta-parameters to load.")
    result = evaluate(exp.learner, exp.test, count, run["eval_batch"], run["test_seed"], run["device"])
    if key is not None:
        _CACHE[key] = (result["values"], result["digest"])
    return result["values"], result["digest"]


def horizon(compare_dir: Path, factors: list[int], test_tasks: int | None = None, log=print) -> dict:
    report = json.loads((compare_dir / "report.json").read_text())
    out = {"compare_dir": str(compare_dir), "factors": factors, "test_tasks": test_tasks, "comparisons": []}
    for comp in report["comparisons"]:
        metric, reference = comp["metric"], comp["reference"]
        first = compare_dir / next(iter(comp["fillers"].values()))["run_dirs"][0]
        trained_steps = yaml.safe_load((first / "config.yaml").read_text())["learner"].get("inner_steps", 1)
        values: dict[str, dict[int, list]] = {}
        cpu: dict[str, float] = {}
        for fname, filler in comp["fillers"].items():
            values[fname] = {}
            for factor in factors:
                per_seed = []
                start = time.process_time()
                for run_dir in filler["run_dirs"]:
                    v, digest = test_values(compare_dir / run_dir, factor * trained_steps, test_tasks)
                    per_seed.append((np.asarray(v[metric]), digest))
                values[fname][factor] = per_seed
                cpu[f"{fname}@{factor}"] = round(time.process_time() - start, 1)
                log(f"{comp['name']}: {fname} at {factor}x{trained_steps} steps: "
                    f"{np.mean([s[0].mean() for s in per_seed]):.4f} ({cpu[f'{fname}@{factor}']} CPU-s)")
        rows = {}
        for fname in values:
            rows[fname] = {"label": comp["fillers"][fname]["label"], "kind": comp["fillers"][fname]["kind"]}
            for factor in factors:
                runs, refs = values[fname][factor], values[reference][factor]
                if any(a[1] != b[1] for a, b in zip(runs, refs)):
                    raise RuntimeError(f"{fname} and {reference} were tested on different tasks at {factor}x.")
                seeds = [float(a[0].mean()) for a in runs]
                entry = {"steps": factor * trained_steps, "over_seeds": mean_ci(seeds), "per_seed": seeds,
                         "over_tasks": mean_ci(np.concatenate([a[0] for a in runs]))}
                if fname != reference:
                    diffs = np.mean([a[0] - b[0] for a, b in zip(runs, refs)], axis=0)
                    entry["vs_reference"] = paired_difference(diffs, np.zeros_like(diffs))
                    entry["vs_reference_per_seed"] = [float((a[0] - b[0]).mean()) for a, b in zip(runs, refs)]
                rows[fname][str(factor)] = entry
        out["comparisons"].append({"name": comp["name"], "metric": metric, "reference": reference,
                                   "higher_is_better": comp["higher_is_better"], "trained_steps": trained_steps,
                                   "fillers": rows, "eval_cpu_s": cpu})
    return out


def table(result: dict) -> str:
    lines = []
    for comp in result["comparisons"]:
        scale = 100 if comp["metric"] == "accuracy" else 1
        unit = "%" if scale == 100 else ""
        factors = result["factors"]
        head = [f"{f}x = {f * comp['trained_steps']} steps" for f in factors]
        tasks = f", first {result['test_tasks']} test tasks" if result.get("test_tasks") else ""
        lines += [f"### {comp['name']}: test {comp['metric']}{unit} (mean ± 95% CI over seeds{tasks}); "
                  f"Δ vs {comp['reference']} paired over tasks", "",
                  "| filler | kind | " + " | ".join(head) + " |",
                  "| --- | --- | " + " | ".join("---" for _ in head) + " |"]
        for row in comp["fillers"].values():
            cells = []
            for f in factors:
                e = row[str(f)]
                cell = format_ci(e["over_seeds"], scale, 2)
                if "vs_reference" in e:
                    d = e["vs_reference"]
                    star = "*" if d["significant"] else ""
                    cell += f" (Δ {d['mean'] * scale:+.2f} ± {d['ci95'] * scale:.2f}{star})"
                cells.append(cell)
            lines.append(f"| {row['label']} | {row['kind']} | " + " | ".join(cells) + " |")
        lines += ["", "\\* the paired 95% CI over tasks excludes 0.", ""]
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    comps = result["comparisons"]
    fig, axes = plt.subplots(1, len(comps), figsize=(5.5 * len(comps), 4), squeeze=False)
    for ax, comp in zip(axes[0], comps):
        scale = 100 if comp["metric"] == "accuracy" else 1
        for row in comp["fillers"].values():
            xs = [row[str(f)]["steps"] for f in result["factors"]]
            ys = [row[str(f)]["over_seeds"]["mean"] * scale for f in result["factors"]]
            err = [(row[str(f)]["over_seeds"]["ci95"] or 0) * scale for f in result["factors"]]
            ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=row["label"],
                        linestyle="-" if row["kind"] == "learned" else "--")
        ax.axvline(comp["trained_steps"], color="grey", linewidth=0.8)
        ax.set_xscale("log")
        steps = [f * comp["trained_steps"] for f in result["factors"]]
        ax.set_xticks(steps, [str(s) for s in steps])
        ax.minorticks_off()
        ax.set_xlabel("inner steps at test (grey: the unrolled steps of meta-training)")
        ax.set_ylabel(f"test {comp['metric']}{' (%)' if scale == 100 else ''}")
        ax.set_title(comp["name"])
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("compare_dir", type=Path, help="a directory written by autometa compare")
    parser.add_argument("--factors", type=int, nargs="+", default=[1, 5, 20])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--test-tasks", type=int, default=None,
                        help="test only the first N tasks of each run's test stream (default: all)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start, cpu = time.perf_counter(), time.process_time()
    result = horizon(args.compare_dir, args.factors, args.test_tasks)
    result["wall_s"], result["cpu_s"] = round(time.perf_counter() - start, 1), round(time.process_time() - cpu, 1)
    (args.compare_dir / "horizon.json").write_text(json.dumps(result, indent=2))
    text = table(result)
    (args.compare_dir / "horizon.md").write_text(text + f"\n{result['wall_s']} s wall, {result['cpu_s']} s CPU\n")
    plot(result, args.compare_dir / "horizon.png")
    print(text)
    print(f"{result['wall_s']} s wall, {result['cpu_s']} s CPU; wrote horizon.json, horizon.md, horizon.png "
          f"in {args.compare_dir}")


if __name__ == "__main__":
    main()
