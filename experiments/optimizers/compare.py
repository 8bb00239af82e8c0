"""Learned vs tuned hand-crafted optimizers on quadratics and the MNIST MLP (Andrychowicz et al. 2016).

Protocol (every number in results.md comes from this script):

1. Tuning. Each hand-crafted rule (SGD, Momentum 0.9, Nesterov 0.9, RMSprop alpha 0.99, Adam
   default betas) gets its learning rate chosen from the log grid 10^-4 .. 10^1 (11 values, half
   a decade apart) by the mean loss at the final step on *meta-training* problems (the same
   family the LSTM is trained on, its own seed). ``autometa.search`` had not landed, hence the grid.
2. Meta-training. The LSTM optimizer (2 layers, 20 units, p = 10, output scale 0.1) is trained by
   truncated BPTT: horizon 100, unrolls of 20, Adam on the LSTM weights, on the same family.
3. Held-out evaluation. New problems (other seed; for MNIST, minibatches drawn from the MNIST
   *test* images and fresh initial weights): loss against steps, mean and 95% CI (Student t) over
   the tasks, and a paired per-task difference at the final step.
4. Generalization (MNIST only, LSTM trained on the base problem, baselines re-tuned on each
   variant's training problems): 200 steps, 40 hidden units, two hidden layers, ReLU.

Usage (one part per process, each under 15 minutes on one core):

    AUTOMETA_DATA=/work/shared/data OMP_NUM_THREADS=1 nice -n 5 python experiments/optimizers/compare.py quadratic
    ... compare.py mnist-train ; compare.py mnist-continue ; compare.py mnist-eval ;
    ... compare.py generalization --variants ... ; python experiments/optimizers/report.py
(run_all.sh runs them in order.)
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from scipy import stats

from autometa.data import load_mnist
from autometa.optimizers import (
    HANDCRAFTED,
    LSTMOptimizer,
    MLPFamily,
    QuadraticFamily,
    meta_train,
    optimize,
)

HERE = Path(__file__).resolve().parent
OUT = HERE / "comparison"
LR_GRID = [10 ** (e / 2) for e in range(-8, 3)]  # 1e-4 .. 10, half-decade steps
RULES = ["sgd", "momentum", "nesterov", "rmsprop", "adam"]
SEEDS = {"tune": 11, "meta_train": 12, "test": 13}

SETTINGS = {
    "quadratic": {"tune_tasks": 100, "test_tasks": 100, "steps": 100, "iterations": 300,
                  "tasks_per_iteration": 128, "meta_lr": 3e-3},
    "mnist": {"tune_tasks": 20, "test_tasks": 20, "steps": 100, "iterations": 80,
              "tasks_per_iteration": 1, "meta_lr": 3e-3},
}
VARIANTS = {
    "mnist_200_steps": {"steps": 200, "hidden": (20,), "activation": "sigmoid"},
    "mnist_40_units": {"steps": 100, "hidden": (40,), "activation": "sigmoid"},
    "mnist_2_layers": {"steps": 100, "hidden": (20, 20), "activation": "sigmoid"},
    "mnist_relu": {"steps": 100, "hidden": (20,), "activation": "relu"},
}


def mean_ci(values: np.ndarray) -> tuple[float, float]:
    """Mean and 95% CI half-width (Student t) over the first axis."""
    n = len(values)
    sem = values.std(ddof=1) / math.sqrt(n)
    return float(values.mean()), float(stats.t.ppf(0.975, n - 1) * sem)


def curves_summary(curves: np.ndarray) -> dict:
    """Per-step mean and CI of a ``(steps + 1, tasks)`` loss array."""
    means, cis = zip(*(mean_ci(row) for row in curves))
    return {"mean": list(means), "ci95": list(cis), "n": curves.shape[1]}


def run_rule(rule, problem, steps: int) -> np.ndarray:
    losses = optimize(rule, problem, steps).numpy()
    return np.where(np.isfinite(losses), losses, np.inf)


def tune(family, steps: int, tasks: int, seed: int) -> dict:
    """The best grid learning rate of each rule by mean final loss on training problems."""
    problem = family.sample(tasks, steps, torch.Generator().manual_seed(seed))
    table = {}
    for name in RULES:
        scores = {}
        for lr in LR_GRID:
            final = run_rule(HANDCRAFTED[name](lr=lr), problem, steps)[-1]
            scores[lr] = float(final.mean()) if np.isfinite(final).all() else float("inf")
        best = min(scores, key=scores.get)
        table[name] = {"lr": best, "train_final_loss": scores[best], "grid": scores}
        print(f"  tuned {name:9s} lr={best:.4g}  train final loss {scores[best]:.4f}", flush=True)
    return table


def evaluate(family, optimizers: dict, steps: int, tasks: int, seed: int) -> dict:
    """Loss curves of every optimizer on the same held-out problems."""
    problem = family.sample(tasks, steps, torch.Generator().manual_seed(seed))
    curves, out = {}, {}
    for name, rule in optimizers.items():
        start = time.perf_counter()
        curves[name] = run_rule(rule, problem, steps)
        out[name] = curves_summary(curves[name])
        out[name]["final_per_task"] = curves[name][-1].tolist()
        out[name]["seconds"] = time.perf_counter() - start
        print(f"  {name:9s} final {out[name]['mean'][-1]:.4f} ± {out[name]['ci95'][-1]:.4f} "
              f"({out[name]['seconds']:.1f}s)", flush=True)
    if "lstm" in curves:
        for name in optimizers:
            if name != "lstm":
                diff = curves["lstm"][-1] - curves[name][-1]
                mean, ci = mean_ci(diff) if np.isfinite(diff).all() else (float("nan"), float("nan"))
                out[name]["lstm_minus_this_final"] = {"mean": mean, "ci95": ci}
    return out


def plot(results: dict, title: str, path: Path, log: bool) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, curve in results.items():
        mean, ci = np.array(curve["mean"]), np.array(curve["ci95"])
        steps = np.arange(len(mean))
        label = name if name == "lstm" else f"{name} (lr {curve.get('lr', float('nan')):.3g})"
        ax.plot(steps, mean, label=label, lw=2.2 if name == "lstm" else 1.2)
        ax.fill_between(steps, mean - ci, mean + ci, alpha=0.2)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("optimizee step")
    ax.set_ylabel("loss (mean ± 95% CI over held-out tasks)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def handcrafted(table: dict) -> dict:
    return {name: HANDCRAFTED[name](lr=table[name]["lr"]) for name in RULES}


def train_lstm(family, setting: dict, tag: str) -> dict:
    torch.manual_seed(SEEDS["meta_train"])  # the LSTM's initial weights (nn.Module default init)
    optimizer = LSTMOptimizer(hidden_size=20, num_layers=2, preprocess=10.0, output_scale=0.1)

    def report(iteration, record):
        if iteration % 10 == 0 or iteration == setting["iterations"] - 1:
            print(f"  meta-iteration {iteration:4d}  meta-loss {record['meta_loss']:.3f}  "
                  f"final loss {record['final_loss']:.4f}  {record['seconds']:.0f}s", flush=True)

    outer = torch.optim.Adam(optimizer.parameters(), lr=setting["meta_lr"])
    history = meta_train(optimizer, family, setting["iterations"], seed=SEEDS["meta_train"], horizon=100,
                         unroll_length=20, tasks_per_iteration=setting["tasks_per_iteration"],
                         meta_lr=setting["meta_lr"], callback=report, outer=outer)
    optimizer.save(OUT / f"lstm_{tag}.pt")
    torch.save(outer.state_dict(), OUT / f"lstm_{tag}_adam.pt")
    return {"history": history, "seconds": history[-1]["seconds"], "iterations": setting["iterations"],
            "tasks_per_iteration": setting["tasks_per_iteration"], "meta_lr": setting["meta_lr"],
            "horizon": 100, "unroll": 20}


def part_quadratic(iterations: int | None) -> None:
    setting, family = dict(SETTINGS["quadratic"]), QuadraticFamily(dim=10)
    setting["iterations"] = iterations or setting["iterations"]
    print("quadratic: tuning", flush=True)
    table = tune(family, setting["steps"], setting["tune_tasks"], SEEDS["tune"])
    print("quadratic: meta-training", flush=True)
    training = train_lstm(family, setting, "quadratic")
    optimizers = {**handcrafted(table), "lstm": LSTMOptimizer.load(OUT / "lstm_quadratic.pt")}
    print("quadratic: held-out evaluation", flush=True)
    results = evaluate(family, optimizers, setting["steps"], setting["test_tasks"], SEEDS["test"])
    for name in RULES:
        results[name]["lr"] = table[name]["lr"]
    save("quadratic", {"tuning": table, "meta_training": training, "test": results})
    plot(results, "10-dim quadratics (held-out)", OUT / "quadratic.png", log=True)


def part_mnist_train() -> None:
    setting, family = SETTINGS["mnist"], MLPFamily(load_mnist(train=True), (20,), "sigmoid", 128)
    print("mnist: tuning", flush=True)
    table = tune(family, setting["steps"], setting["tune_tasks"], SEEDS["tune"])
    print("mnist: meta-training", flush=True)
    training = train_lstm(family, setting, "mnist")
    save("mnist_train", {"tuning": table, "meta_training": training})


def part_mnist_continue(iterations: int) -> None:
    """More meta-training of the MNIST LSTM on fresh problems (the budget came in chunks of < 15 min)."""
    setting, family = SETTINGS["mnist"], MLPFamily(load_mnist(train=True), (20,), "sigmoid", 128)
    record = json.loads((OUT / "mnist_train.json").read_text())
    training = record["meta_training"]
    optimizer = LSTMOptimizer.load(OUT / "lstm_mnist.pt")
    outer = torch.optim.Adam(optimizer.parameters(), lr=setting["meta_lr"])
    if (OUT / "lstm_mnist_adam.pt").exists():
        outer.load_state_dict(torch.load(OUT / "lstm_mnist_adam.pt", weights_only=True))
    chunk = len(training.get("chunks", [])) + 1
    print(f"mnist: continuing meta-training (chunk {chunk}, {iterations} iterations)", flush=True)

    def report(iteration, entry):
        if iteration % 10 == 0 or iteration == iterations - 1:
            print(f"  meta-iteration {iteration:4d}  meta-loss {entry['meta_loss']:.3f}  "
                  f"final loss {entry['final_loss']:.4f}  {entry['seconds']:.0f}s", flush=True)

    history = meta_train(optimizer, family, iterations, seed=SEEDS["meta_train"] + 1000 * chunk, horizon=100,
                         unroll_length=20, tasks_per_iteration=setting["tasks_per_iteration"],
                         meta_lr=setting["meta_lr"], callback=report, outer=outer)
    optimizer.save(OUT / "lstm_mnist.pt")
    torch.save(outer.state_dict(), OUT / "lstm_mnist_adam.pt")
    training.setdefault("chunks", []).append({"iterations": iterations, "seconds": history[-1]["seconds"],
                                              "cpu_seconds": history[-1]["cpu_seconds"],
                                              "seed": SEEDS["meta_train"] + 1000 * chunk})
    training["history"] += [{**h, "iteration": training["iterations"] + h["iteration"]} for h in history]
    training["iterations"] += iterations
    training["seconds"] += history[-1]["seconds"]
    save("mnist_train", record)


def part_mnist_eval() -> None:
    setting = SETTINGS["mnist"]
    table = json.loads((OUT / "mnist_train.json").read_text())["tuning"]
    family = MLPFamily(load_mnist(train=False), (20,), "sigmoid", 128)
    optimizers = {**handcrafted(table), "lstm": LSTMOptimizer.load(OUT / "lstm_mnist.pt")}
    print("mnist: held-out evaluation", flush=True)
    results = evaluate(family, optimizers, setting["steps"], setting["test_tasks"], SEEDS["test"])
    for name in RULES:
        results[name]["lr"] = table[name]["lr"]
    save("mnist", {"test": results})
    plot(results, "MNIST MLP, 20 sigmoid units (held-out)", OUT / "mnist.png", log=False)


def part_generalization(names: list[str]) -> None:
    train_data, test_data = load_mnist(train=True), load_mnist(train=False)
    lstm = LSTMOptimizer.load(OUT / "lstm_mnist.pt")
    for name in names:
        variant = VARIANTS[name]
        print(f"{name}: tuning", flush=True)
        table = tune(MLPFamily(train_data, variant["hidden"], variant["activation"], 128),
                     variant["steps"], 10, SEEDS["tune"])
        family = MLPFamily(test_data, variant["hidden"], variant["activation"], 128)
        print(f"{name}: held-out evaluation", flush=True)
        results = evaluate(family, {**handcrafted(table), "lstm": lstm}, variant["steps"],
                           SETTINGS["mnist"]["test_tasks"], SEEDS["test"])
        for rule in RULES:
            results[rule]["lr"] = table[rule]["lr"]
        save(name, {"variant": {**variant, "hidden": list(variant["hidden"])}, "tuning": table,
                    "test": results})
        plot(results, f"{name} (LSTM trained on 20 sigmoid units, 100 steps)", OUT / f"{name}.png", log=False)


def save(name: str, payload: dict) -> None:
    payload["torch"] = torch.__version__
    payload["threads"] = torch.get_num_threads()
    (OUT / f"{name}.json").write_text(json.dumps(payload, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=["quadratic", "mnist-train", "mnist-continue", "mnist-eval",
                                         "generalization"])
    parser.add_argument("--iterations", type=int, default=None,
                        help="meta-training iterations (quadratic: default 300; mnist-continue: 100)")
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS))
    args = parser.parse_args()
    torch.set_num_threads(1)
    OUT.mkdir(exist_ok=True)
    start = time.perf_counter()
    if args.part == "quadratic":
        part_quadratic(args.iterations)
    elif args.part == "mnist-train":
        part_mnist_train()
    elif args.part == "mnist-continue":
        part_mnist_continue(args.iterations or 100)
    elif args.part == "mnist-eval":
        part_mnist_eval()
    else:
        part_generalization(args.variants)
    print(f"{args.part}: done in {time.perf_counter() - start:.0f}s", flush=True)


if __name__ == "__main__":
    main()
