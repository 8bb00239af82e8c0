"""Time-budgeted Omniglot 5-way 1-shot runs of MAML and the metric learners: learning curves against seconds.

Each learner's shipped config (``experiments/*_5w1s.yaml``, the papers' settings) is run with
``autometa run`` for a budget of meta-training seconds (``run.time_budget_s``; validation and testing
are not counted), with the tasks on the device (``run.device_tasks``) and exact float32 (``run.precision
fp32``). Written: each run's results directory, ``curves.json`` (validation accuracy against
meta-training seconds and steps, the final test accuracy with its 95% CI over 600 tasks, the run loop's
tasks/s, the published number) and ``curves.png``.

Usage (the suite runs it, see benchmarks/gpu_suite.sh)::

    python benchmarks/gpu_curves.py --device cuda --out gpu_results --budget maml=90 protonet=60
    python benchmarks/gpu_curves.py --device cpu --tiny --out /tmp/curves     # a dry run on a CPU

Numbers are printed and written, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# name: (config, default budget in s, validate every N steps on a GPU)
LEARNERS = {
    "maml": ("omniglot_maml_5w1s.yaml", 75, 250),
    "protonet": ("protonet_omniglot_5w1s.yaml", 60, 500),
    "matchingnet": ("matchingnet_omniglot_5w1s.yaml", 20, 500),
    "relationnet": ("relationnet_omniglot_5w1s.yaml", 20, 500),
    "siamese": ("siamese_omniglot_5w1s.yaml", 20, 500),
    "graphnet": ("graphnet_omniglot_5w1s.yaml", 20, 250),
}
PRIORITY = ("maml", "protonet")
OVERHEAD_S = 30  # a run's start-up, data loading, validation passes and 600 test tasks on a GPU (a guess)
TINY = ["model.hidden=8", "run.val_tasks=10", "run.test_tasks=20", "run.eval_batch=10", "outer.meta_batch=2"]


def run_one(name: str, budget: float, args) -> dict:
    config, _, every = LEARNERS[name]
    out = Path(args.out) / "runs" / name
    overrides = [f"run.device={args.device}", "run.device_tasks=true", f"run.precision={args.precision}",
                 f"run.time_budget_s={budget}", "run.progress=false", "outer.steps=100000000",
                 f"run.validate_every={5 if args.tiny else every}", "run.checkpoint_every=0", "run.log_every=50"]
    if args.tiny:
        overrides += TINY
        if name == "protonet":
            overrides += ["tasks.train_ways=10"]
    cmd = [sys.executable, "-m", "autometa.cli", "run", str(ROOT / "experiments" / config), "--out", str(out),
           "--overwrite"] + [a for o in overrides for a in ("--set", o)]
    start = time.perf_counter()
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=path))
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        print(f"{name}: failed ({proc.returncode}): {proc.stderr[-1500:]}", flush=True)
        return {"error": proc.stderr[-3000:], "wall_s": wall}
    results = json.loads((out / "results.json").read_text())
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    import yaml
    published = yaml.safe_load((ROOT / "experiments" / config).read_text()).get("published")
    meta_batch = results["meta_batch"]
    summary = {
        "config": config, "budget_s": budget, "overrides": overrides, "published": published,
        "test_accuracy": results["test"]["accuracy"], "steps": results["steps"],
        "meta_train_time_s": results["meta_train_time_s"],
        "run_loop_tasks_per_s": results["steps"] * meta_batch / max(results["meta_train_time_s"], 1e-9),
        "device_name": results.get("device_name"), "precision": results.get("precision"), "wall_s": wall,
        "curve": [{"time_s": r["time_s"], "step": r["step"], "val_accuracy": r["val_accuracy"]}
                  for r in rows if "val_accuracy" in r],
    }
    acc = summary["test_accuracy"]
    print(f"{name:12s} {summary['steps']:7d} steps in {summary['meta_train_time_s']:7.1f} s "
          f"({summary['run_loop_tasks_per_s']:8.1f} tasks/s): test {100 * acc['mean']:.2f} ± {100 * acc['ci95']:.2f}% "
          f"(n={acc['n']}); published {published}", flush=True)
    return summary


def plot(summaries: dict, path: Path, device_name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, s in summaries.items():
        if "curve" in s and s["curve"]:
            ax.plot([r["time_s"] for r in s["curve"]], [100 * r["val_accuracy"] for r in s["curve"]], marker=".",
                    label=f"{name}: test {100 * s['test_accuracy']['mean']:.1f}%")
    ax.set_xlabel("meta-training seconds (validation and test not counted)")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title(f"Omniglot 5-way 1-shot on {device_name}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", required=True)
    parser.add_argument("--learners", nargs="+", default=list(LEARNERS), choices=list(LEARNERS))
    parser.add_argument("--budget", nargs="*", default=[], metavar="NAME=SECONDS",
                        help="meta-training seconds per learner (defaults: " +
                             ", ".join(f"{k} {v[1]}" for k, v in LEARNERS.items()) + ")")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every budget (e.g. 8 for 10-minute runs)")
    parser.add_argument("--total-s", type=float, help="fit the runs (start-up and testing included, 30 s each) into "
                                                       "this many seconds: MAML and ProtoNet keep room, later "
                                                       "learners are skipped when none is left")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--tiny", action="store_true", help="a dry run: width 8, 20 test tasks, 6 s budgets")
    args = parser.parse_args()
    budgets = {k: v[1] * args.scale for k, v in LEARNERS.items()}
    budgets.update({k: float(v) for k, v in (item.split("=") for item in args.budget)})
    if args.tiny:
        budgets = {k: 6.0 for k in budgets}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    summaries, start = {}, time.perf_counter()
    for i, name in enumerate(args.learners):
        budget = budgets[name]
        if args.total_s:  # MAML and ProtoNet (first) keep room for each other; the rest run while time is left
            later = [k for k in args.learners[i + 1:] if k in PRIORITY]
            room = args.total_s - (time.perf_counter() - start) - OVERHEAD_S - (OVERHEAD_S + 20) * len(later)
            budget = min(budget, room)
            if budget < min(10, budgets[name]):
                summaries[name] = {"skipped": f"no time left ({room:.0f} s of meta-training)"}
                print(f"{name}: skipped, no time left", flush=True)
                continue
        summaries[name] = run_one(name, round(budget, 1), args)
        (Path(args.out) / "curves.json").write_text(json.dumps(summaries, indent=1))
    device_name = next((s.get("device_name") for s in summaries.values() if s.get("device_name")), None) or args.device
    plot(summaries, Path(args.out) / "curves.png", device_name)


if __name__ == "__main__":
    main()
