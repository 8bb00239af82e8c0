"""Render a comparison's ``report.md`` and plots from its results directory alone."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import numpy as np

from autometa.experiment._stats import format_ci


def _fmt(stats: dict, metric: str) -> str:
    return format_ci(stats, 100 if metric == "accuracy" else 1, 2 if metric == "accuracy" else 3)


def _unit(metric: str) -> str:
    return "accuracy (%)" if metric == "accuracy" else f"{metric} (lower is better)" if metric == "loss" else metric


def _headline(entry: dict) -> dict:
    """Over seeds when there are several, else over the test tasks of the one seed."""
    return entry["over_seeds"] if entry["over_seeds"]["n"] > 1 else entry["over_tasks"]


def table_rows(comp: dict) -> list[list[str]]:
    metric = comp["metric"]
    rows = []
    for e in comp["fillers"].values():
        c = e["cost"]
        vs = e.get("vs_reference")
        diff = "reference" if vs is None else (
            _fmt(vs["over_tasks"], metric) + (" *" if vs["significant"] else ""))
        gflop = "-" if c["meta_train_gflop"] is None else f"{c['meta_train_gflop']:.3g}"
        memory = "-" if c["peak_memory_mb"] is None else f"{c['peak_memory_mb']:.0f}"
        rows.append([e["label"], e["kind"], _fmt(_headline(e), metric), diff, f"{c['meta_train_time_s']:.1f}",
                     gflop, f"{c['adaptation_time_per_task_ms']:.2f}", memory])
    return rows


HEADER = ["filler", "kind", "metric (mean ± 95% CI)", "Δ vs reference", "meta-train s", "meta-train GFLOP",
          "adapt ms/task", "peak MB"]


def print_table(report: dict) -> None:
    """A compact table per comparison in the terminal."""
    for comp in report["comparisons"]:
        print(f"\n{comp['name']}  [{comp['slot']}; {_unit(comp['metric'])}; {len(comp['seeds'])} seed(s)]")
        rows = [HEADER] + table_rows(comp)
        widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
        for j, row in enumerate(rows):
            print("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)))
            if j == 0:
                print("  " + "  ".join("-" * w for w in widths))
        for e in comp["fillers"].values():
            if "vs_reference" in e:
                print(f"  - {e['vs_reference']['verdict']}")


def _read_curve(run_dir: Path, key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    steps, times, values = [], [], []
    path = run_dir / "metrics.jsonl"
    if path.exists():
        for line in path.read_text().splitlines():
            row = json.loads(line)
            if key in row:
                steps.append(row["step"])
                times.append(row["time_s"])
                values.append(row[key])
    return np.array(steps), np.array(times), np.array(values)


def _plot_metric(comp: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    metric, names = comp["metric"], list(comp["fillers"])
    scale = 100 if metric == "accuracy" else 1
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(names), 3.6))
    for i, name in enumerate(names):
        e = comp["fillers"][name]
        h = _headline(e)
        color = "tab:blue" if e["kind"] == "learned" else "tab:gray"
        ax.bar(i, h["mean"] * scale, yerr=(h["ci95"] or 0) * scale, color=color, capsize=6, alpha=0.85)
        seeds = list(e["per_seed"].values())
        ax.plot([i] * len(seeds), np.array(seeds) * scale, "k.", ms=5)
    ax.set_xticks(range(len(names)), [comp["fillers"][n]["label"] for n in names], rotation=20, ha="right")
    ax.set_ylabel(_unit(metric))
    if metric == "accuracy":
        low = min(min(comp["fillers"][n]["per_seed"].values()) for n in names) * scale
        ax.set_ylim(max(0, low - 10), min(100, ax.get_ylim()[1]))
    ax.set_title(f"{comp['name']}: mean ± 95% CI (dots: seeds)\ngray: hand-crafted, blue: learned", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_curves(comp: dict, out: Path, path: Path) -> bool:
    import matplotlib.pyplot as plt

    key = f"val_{comp['metric']}"
    scale = 100 if comp["metric"] == "accuracy" else 1
    fig, (by_step, by_time) = plt.subplots(1, 2, figsize=(9, 3.4))
    drawn = False
    for e in comp["fillers"].values():
        curves = [_read_curve(out / d, key) for d in e["run_dirs"]]
        curves = [c for c in curves if len(c[0]) > 1]
        if not curves:
            continue
        n = min(len(c[0]) for c in curves)
        steps = curves[0][0][:n]
        times = np.mean([c[1][:n] for c in curves], axis=0)
        values = np.mean([c[2][:n] for c in curves], axis=0) * scale
        by_step.plot(steps, values, marker=".", label=e["label"])
        by_time.plot(times, values, marker=".", label=e["label"])
        drawn = True
    if drawn:
        by_step.set_xlabel("meta-training step")
        by_time.set_xlabel("meta-training time (s)")
        for ax in (by_step, by_time):
            ax.set_ylabel(f"validation {_unit(comp['metric'])}")
            ax.grid(alpha=0.3)
        by_step.legend(fontsize=8)
        fig.suptitle(f"{comp['name']}: learning curves (mean over seeds)", fontsize=10)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
    plt.close(fig)
    return drawn


def _plot_cost(comp: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    scale = 100 if comp["metric"] == "accuracy" else 1
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for e in comp["fillers"].values():
        h = _headline(e)
        cost = max(e["cost"]["meta_train_time_s"], 1e-2)
        ax.errorbar(cost, h["mean"] * scale, yerr=(h["ci95"] or 0) * scale, fmt="o", capsize=4,
                    color="tab:blue" if e["kind"] == "learned" else "tab:gray")
        ax.annotate(e["label"], (cost, h["mean"] * scale), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("meta-training time (s, log; 0 plotted at 0.01)")
    ax.set_ylabel(_unit(comp["metric"]))
    ax.set_title(f"{comp['name']}: result against cost", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_adaptation(comp: dict, out: Path, path: Path) -> bool:
    """Sinusoid fits after 0, 1 and 10 steps on one test task, for each filler (first seed)."""
    import matplotlib.pyplot as plt
    import torch
    import yaml

    from autometa.experiment._run import build_experiment, load_checkpoint

    names = list(comp["fillers"])
    fig, axes = plt.subplots(1, len(names), figsize=(3.3 * len(names), 3.0), sharey=True)
    task = None
    for ax, name in zip(np.atleast_1d(axes), names):
        run_dir = out / comp["fillers"][name]["run_dirs"][0]
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        config["run"]["validate_every"] = 0
        exp = build_experiment(config)
        ckpt = run_dir / "checkpoints" / ("best.pt" if (run_dir / "checkpoints" / "best.pt").exists() else "last.pt")
        if ckpt.exists():
            exp.learner.load_state_dict(load_checkpoint(ckpt)["learner"])
        if task is None:
            task = next(exp.test.episodes(1, 1, config["run"]["test_seed"] + 7))
        learner = exp.learner
        x = torch.linspace(-5, 5, 200).view(-1, 1)
        amp, phase = task.info["amplitude"][0], task.info["phase"][0]
        ax.plot(x, amp * torch.sin(x - phase), "k-", lw=1.5, label="true")
        ax.plot(task.support_x[0], task.support_y[0], "k^", ms=6, label="support")
        if not hasattr(learner, "adapt"):
            continue
        for steps, style in ((0, ":"), (1, "--"), (10, "-")):
            params = learner.model_params(learner.meta_params()) if steps == 0 else \
                learner.adapt(task.support_x[0], task.support_y[0], steps=steps)
            with torch.no_grad():
                ax.plot(x, learner.predict(params, x), style, label=f"{steps} step{'s' * (steps != 1)}")
        ax.set_title(comp["fillers"][name]["label"], fontsize=9)
        ax.set_xlabel("x")
    np.atleast_1d(axes)[0].legend(fontsize=7)
    fig.suptitle(f"{comp['name']}: adaptation to one test task", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def render_report(out_dir) -> Path:
    """Write ``report.md`` and ``plots/*.png`` from ``out_dir/report.json`` and the run folders."""
    import matplotlib

    matplotlib.use("Agg")
    from autometa.errors import ConfigError

    out = Path(out_dir)
    if not (out / "report.json").exists():
        raise ConfigError(f"{out} holds no report.json; run `autometa compare` with --out {out} first.")
    report = json.loads((out / "report.json").read_text())
    plots = out / "plots"
    plots.mkdir(exist_ok=True)
    lines = ["# autometa comparison report", ""]
    if report.get("description"):
        lines += [report["description"].strip(), ""]
    versions = {}
    for comp in report["comparisons"]:
        first = next(iter(comp["fillers"].values()))["run_dirs"][0]
        if (out / first / "versions.json").exists():
            versions = json.loads((out / first / "versions.json").read_text())
            break
    lines += [f"Machine: {platform.machine()} {versions.get('processor') or ''}, device "
              f"{next(iter(report['comparisons'][0]['fillers'].values()))['cost']['device']}, torch "
              f"{versions.get('torch', '?')}. Total time {report.get('total_time_s', '?')} s. "
              f"Seeds: {report['seeds']}.",
              "", "Every filler of a comparison was meta-trained on the same task stream and tested on the same "
              "test tasks (checked by a digest of the tasks). Metric: mean ± 95% CI over seeds (over test tasks "
              "when there is one seed). Δ: paired difference to the reference over test tasks (each task's "
              "difference averaged over seeds), ± 95% CI; * marks a significant difference (CI excludes 0 and "
              "the sign is the same for every seed). Costs are per run (mean over seeds): FLOPs are counted "
              "with torch.utils.flop_counter (one meta-step times the steps; one test task's adaptation and "
              "prediction); peak MB is the resident-memory rise of the process during the run.", ""]
    for comp in report["comparisons"]:
        name = comp["name"]
        lines += [f"## {name} ({comp['slot']})", ""]
        if comp.get("description"):
            lines += [comp["description"].strip(), ""]
        lines += [f"Metric: {_unit(comp['metric'])}; reference: {comp['reference']}; "
                  f"{next(iter(comp['fillers'].values()))['tasks_per_seed']} test tasks per seed.", ""]
        lines += ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
        lines += ["| " + " | ".join(row) + " |" for row in table_rows(comp)]
        lines += [""]
        for e in comp["fillers"].values():
            if "vs_reference" in e:
                vs = e["vs_reference"]
                lines.append(f"- **{vs['verdict']}** (Δ {_fmt(vs['over_tasks'], comp['metric'])}, p = "
                             f"{vs['over_tasks']['p_value']:.3g} over tasks; per seed: "
                             + ", ".join(f"{v * (100 if comp['metric'] == 'accuracy' else 1):+.3g}"
                                         for v in vs["per_seed"].values()) + ")")
            if "tuned" in e:
                lines.append(f"- {e['label']} was tuned first ({e['tuned']['trials']} trials, Optuna TPE, "
                             f"validation tasks): {e['tuned']['params']}")
        lines += ["", "Per-seed results: " + "; ".join(
            f"{e['label']}: " + ", ".join(f"{v * (100 if comp['metric'] == 'accuracy' else 1):.4g}"
                                          for v in e["per_seed"].values()) for e in comp["fillers"].values()), ""]
        _plot_metric(comp, plots / f"{name}_metric.png")
        lines += [f"![{name} metric](plots/{name}_metric.png)"]
        if _plot_curves(comp, out, plots / f"{name}_curves.png"):
            lines += [f"![{name} learning curves](plots/{name}_curves.png)"]
        _plot_cost(comp, plots / f"{name}_cost.png")
        lines += [f"![{name} cost](plots/{name}_cost.png)"]
        if comp.get("task_family") == "sinusoid" and _plot_adaptation(comp, out, plots / f"{name}_adaptation.png"):
            lines += [f"![{name} adaptation](plots/{name}_adaptation.png)"]
        lines += [""]
    (out / "report.md").write_text("\n".join(lines))
    return out / "report.md"
