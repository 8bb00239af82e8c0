"""Render a comparison's ``report.md`` and plots from its results directory alone."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import numpy as np

from autometa.compare._stats import LEVELS, format_interval

_DATASETS = {"digits": "scikit-learn's 8x8 digits", "omniglot": "Omniglot", "sinusoid": "sinusoids",
             "mnist": "MNIST", "fashion_mnist": "Fashion-MNIST", "quadratic": "random quadratics"}


def _scale(metric: str) -> float:
    return 100.0 if metric == "accuracy" else 1.0


def _fmt(stats: dict, metric: str) -> str:
    return format_interval(stats, _scale(metric), 2 if metric == "accuracy" else 3)


def _unit(metric: str) -> str:
    return "accuracy (%)" if metric == "accuracy" else f"{metric} (lower is better)" if metric == "loss" else metric


def _num(value, fmt: str = "{:.3g}") -> str:
    return "-" if value is None else fmt.format(value)


def _budget(e: dict) -> str:
    c = e["cost"]
    text = f"{c['meta_steps']} x {c['meta_batch']} tasks" if c["meta_steps"] else "none"
    if c.get("tuning_trials"):
        text += f" + {c['tuning_trials']} tuning trials ({_num(c.get('tuning_cpu_s'), '{:.0f}')} CPU s)"
    return text


HEADER = ["filler", "kind", "metric, mean [95% interval]", "Δ vs reference [95% interval]", "meta-training budget",
          "CPU s/run", "meta-train GFLOP", "peak MB"]


def table_rows(comp: dict) -> list[list[str]]:
    metric = comp["metric"]
    rows = []
    for e in comp["fillers"].values():
        c = e["cost"]
        vs = e.get("vs_reference")
        diff = "reference" if vs is None else _fmt(vs, metric) + (" *" if vs["significant"] else "")
        rows.append([e["label"], e["kind"], _fmt(e["interval"], metric), diff, _budget(e),
                     _num(c.get("cpu_s"), "{:.1f}"), _num(c.get("meta_train_gflop")),
                     _num(c.get("peak_rss_mb"), "{:.0f}")])
    return rows


def dataset_name(comp: dict) -> str:
    family = comp.get("task_family")
    return _DATASETS.get(family, str(family))


def _level_note(comp: dict) -> str:
    level = next(iter(comp["fillers"].values()))["interval"]["level"]
    return f"intervals over {LEVELS[level]}"


def print_table(report: dict) -> None:
    """A compact table per comparison in the terminal, naming the dataset and the interval used."""
    for comp in report["comparisons"]:
        print(f"\n{comp['name']}  [{comp['slot']}; {dataset_name(comp)}; {_unit(comp['metric'])}; "
              f"{len(comp['seeds'])} seed(s); {_level_note(comp)}]")
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
                times.append(row.get("cpu_time_s", row["time_s"]))
                values.append(row[key])
    return np.array(steps), np.array(times), np.array(values)


def _plot_metric(comp: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    metric, names = comp["metric"], list(comp["fillers"])
    scale = _scale(metric)
    fig, ax = plt.subplots(figsize=(1.8 + 1.3 * len(names), 3.8))
    tops = []
    for i, name in enumerate(names):
        e = comp["fillers"][name]
        h = e["interval"]
        mean = h["mean"] * scale
        low = (h["low"] if h["low"] is not None else h["mean"]) * scale
        high = (h["high"] if h["high"] is not None else h["mean"]) * scale
        color = "tab:blue" if e["kind"] == "learned" else "tab:olive" if e["kind"] == "tuned" else "tab:gray"
        ax.bar(i, mean, color=color, alpha=0.85)
        ax.errorbar(i, mean, yerr=[[mean - low], [high - mean]], color="black", capsize=6)
        seeds = np.array(list(e["per_seed"].values())) * scale
        ax.plot([i] * len(seeds), seeds, "k.", ms=5)
        tops += [high, *seeds]
    ax.set_xticks(range(len(names)), [comp["fillers"][n]["label"] for n in names], rotation=20, ha="right")
    ax.set_ylabel(_unit(metric))
    # bars start at 0 so that their lengths compare; accuracy tops at 100
    ax.set_ylim(0, 100 if metric == "accuracy" else max(tops) * 1.1 if max(tops) > 0 else 1)
    ax.set_title(f"{comp['name']} ({dataset_name(comp)}): mean, 95% interval, dots: seeds\n"
                 f"gray: hand-crafted, olive: tuned, blue: learned", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_curves(comp: dict, out: Path, path: Path) -> bool:
    import matplotlib.pyplot as plt

    key = f"val_{comp['metric']}"
    scale = _scale(comp["metric"])
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
        by_time.set_xlabel("meta-training CPU time (s)")
        for ax in (by_step, by_time):
            ax.set_ylabel(f"validation {_unit(comp['metric'])}")
            ax.grid(alpha=0.3)
        by_step.legend(fontsize=8)
        fig.suptitle(f"{comp['name']} ({dataset_name(comp)}): learning curves (mean over seeds)", fontsize=10)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
    plt.close(fig)
    return drawn


def _plot_cost(comp: dict, path: Path) -> None:
    """Result against the CPU seconds of each filler's own process (linear axis from 0)."""
    import matplotlib.pyplot as plt

    scale = _scale(comp["metric"])
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for e in comp["fillers"].values():
        h = e["interval"]
        cost = e["cost"].get("cpu_s") or 0.0
        if e["cost"].get("tuning_cpu_s"):
            cost += e["cost"]["tuning_cpu_s"]
        mean = h["mean"] * scale
        low = (h["low"] if h["low"] is not None else h["mean"]) * scale
        high = (h["high"] if h["high"] is not None else h["mean"]) * scale
        ax.errorbar(cost, mean, yerr=[[mean - low], [high - mean]], fmt="o", capsize=4,
                    color="tab:blue" if e["kind"] == "learned" else "tab:olive" if e["kind"] == "tuned" else "tab:gray")
        ax.annotate(e["label"], (cost, mean), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.margins(x=0.25)
    ax.set_xlim(left=0)
    ax.set_xlabel("CPU seconds per run, its own process (+ the whole tuning, done once)")
    ax.set_ylabel(_unit(comp["metric"]))
    ax.set_title(f"{comp['name']} ({dataset_name(comp)}): result against cost", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_adaptation(comp: dict, out: Path, path: Path) -> bool:
    """Sinusoid fits on one test task before and after the compared number of adaptation steps."""
    import matplotlib.pyplot as plt
    import torch

    from autometa.experiment._config import load_yaml
    from autometa.experiment._run import build_experiment, load_checkpoint

    names = list(comp["fillers"])
    fig, axes = plt.subplots(1, len(names), figsize=(3.3 * len(names), 3.1), sharey=True)
    task = None
    for ax, name in zip(np.atleast_1d(axes), names):
        run_dir = out / comp["fillers"][name]["run_dirs"][0]
        config = load_yaml((run_dir / "config.yaml").read_text())
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
        ax.set_title(comp["fillers"][name]["label"], fontsize=9)
        ax.set_xlabel("x")
        if not hasattr(learner, "adapt"):
            continue
        # the steps this filler is tested with (eval_inner_steps, else inner_steps)
        compared = int(getattr(learner, "eval_inner_steps", None) or getattr(learner, "inner_steps", 1) or 1)
        for steps, style in ((0, ":"), (compared, "-")):
            params = learner.model_params(learner.meta_params()) if steps == 0 else \
                learner.adapt(task.support_x[0], task.support_y[0], steps=steps)
            with torch.no_grad():
                ax.plot(x, learner.predict(params, x), style, label=f"{steps} step{'s' * (steps != 1)}")
        ax.legend(fontsize=7)
    np.atleast_1d(axes)[0].set_ylabel("y (prediction and true function)")
    fig.suptitle(f"{comp['name']}: adaptation to one test task, with the steps used in the comparison",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def render_report(out_dir) -> Path:
    """Write ``report.md`` and ``plots/*.png`` from ``out_dir/report.json`` and the run folders; for the folder
    of a study (``study:`` in its ``config.json`` or ``results.json``), the study's own ``report.md`` and plots."""
    import matplotlib

    matplotlib.use("Agg")
    from autometa.compare._studies import study_module, study_of_dir
    from autometa.errors import ConfigError

    out = Path(out_dir)
    study = study_of_dir(out)
    if study is not None:  # a study's folder: its own report
        return study_module(study).render_study(out)
    if not (out / "report.json").exists():
        raise ConfigError(f"{out} holds neither report.json nor a study's results.json; run `autometa compare` "
                          f"with --out {out} first.")
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
    device = next(iter(report["comparisons"][0]["fillers"].values()))["cost"]["device"]
    lines += [f"Machine: {cpu_name()} ({platform.machine()}, {_cores()} cores), device {device}, torch "
              f"{versions.get('torch', '?')}, {report.get('workers', '?')} worker process(es) of one thread. "
              f"Total {report.get('total_time_s', '?')} s wall (load-dependent); the runs' own processes used "
              f"{report.get('total_worker_cpu_s', '?')} CPU s. Seeds: {report['seeds']}.", ""]
    for note in report.get("notes", []):
        lines += [f"Note: {note}", ""]
    lines += ["How to read the tables: every filler of a comparison was meta-trained on the same task stream "
              "and tested on the same test tasks (checked by a digest of the tasks). The per-task results of "
              "a filler form a seeds x tasks array; the mean and its 95% interval come from a random-intercept "
              "model with test tasks nested in seeds (the mean of the seed means, Student t on seeds - 1 "
              "degrees of freedom from the between-seed variation), which needs at least 3 seeds. With fewer "
              "seeds the interval is over the test tasks with the seeds held fixed: it says how precisely "
              "these seeds were measured, not how another seed would do, so no between-seed claim is made "
              "and no difference is marked. Accuracy intervals are cut to [0, 100]. Δ is the paired "
              "difference to the reference (per seed and task), with the same model; * marks an interval "
              "that excludes 0 over >= 3 seeds. p-values below 0.001 are printed as bounds. Costs are per run "
              "(mean over seeds) and measured in the run's own worker process, so they do not depend on the "
              "machine's load or on run order: CPU seconds (user + system, meta-training and testing), "
              "FLOPs counted with torch.utils.flop_counter (one meta-step times the steps), and the peak "
              "resident memory of the process (including about 0.3 GB of torch loaded before the run). "
              "The meta-training budget is steps x meta-batch, plus tuning trials for tuned fillers.", ""]
    for comp in report["comparisons"]:
        name = comp["name"]
        lines += [f"## {name} ({comp['slot']}; {dataset_name(comp)})", ""]
        if comp.get("description"):
            lines += [comp["description"].strip(), ""]
        first = next(iter(comp["fillers"].values()))
        lines += [f"Metric: {_unit(comp['metric'])}; reference: {comp['fillers'][comp['reference']]['label']}; "
                  f"{first['tasks_per_seed']} test tasks per seed, {len(comp['seeds'])} seed(s); "
                  f"{_level_note(comp)}.", ""]
        lines += ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
        lines += ["| " + " | ".join(row) + " |" for row in table_rows(comp)]
        lines += [""]
        scale = _scale(comp["metric"])
        for e in comp["fillers"].values():
            if "vs_reference" in e:
                vs = e["vs_reference"]
                lines.append(f"- **{vs['verdict']}**: Δ {_fmt(vs, comp['metric'])}; per seed "
                             + ", ".join(f"{v * scale:+.3g}" for v in vs["per_seed"]) + ".")
            if "tuned" in e:
                lines.append(f"- {e['label']} was tuned first ({e['tuned']['trials']} trials, Optuna TPE, "
                             f"validation tasks): {e['tuned']['params']}")
        lines += ["", "Per-seed means: " + "; ".join(
            f"{e['label']}: " + ", ".join(f"{v * scale:.4g}" for v in e["per_seed"].values())
            for e in comp["fillers"].values()), ""]
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
