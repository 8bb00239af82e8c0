"""Plot validation accuracy against meta-training steps, wall time and CPU time of finished runs.

    python benchmarks/learning_curves.py OUT.png RUN_DIR [RUN_DIR ...]

Writes the PNG and, beside it, a JSON with the curves and each run's test result.
"""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def main(out: str, *run_dirs: str) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), sharey=True)
    summary = {}
    for run in map(Path, run_dirs):
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        val = [r for r in rows if "val_accuracy" in r]
        results = json.loads((run / "results.json").read_text())
        label = run.name
        for ax, key in zip(axes, ("step", "time_s", "cpu_time_s")):
            ax.plot([r[key] for r in val], [100 * r["val_accuracy"] for r in val], marker=".", label=label)
        summary[label] = {"curve": val, "test": results["test"], "steps": results["steps"],
                          "meta_train_time_s": results["meta_train_time_s"],
                          "meta_train_cpu_time_s": results.get("meta_train_cpu_time_s")}
    for ax, name in zip(axes, ("meta-training step", "meta-training wall time (s, loaded machine)",
                               "meta-training CPU time (s, one thread)")):
        ax.set_xlabel(name)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("validation accuracy (%), 100 tasks")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    Path(out).with_suffix(".json").write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main(*sys.argv[1:])
