"""Metric learners: throughput per episode, and the zero-shot prototype demonstration.

Usage::

    python benchmarks/metric_learners.py throughput [--reps 3] [--json benchmarks/metric_throughput.json]
    python benchmarks/metric_learners.py zeroshot [--steps 600] [--json benchmarks/metric_zeroshot.json]
    python benchmarks/metric_learners.py evaluate CONFIG CHECKPOINT [--set tasks.ways=20 ...]

``throughput``: meta-training episodes/s (``meta_backward`` + Adam step, one episode per step)
and evaluation episodes/s (``evaluate`` on batches of 10) of every metric learner on Omniglot
episodes (Conv4 with 64 filters, 28x28, 15 queries per class; ProtoNet also on its 60-way
5-query training episodes), one thread. The learners are measured in alternating rounds and
the median of ``--reps`` rounds is reported, in CPU time (``time.process_time``, steadier than
wall time on a shared machine) and wall time, with the ratio to ProtoNet 5-way 1-shot measured
in the same run and the achieved FLOP/s (FLOPs counted by ``torch.utils.flop_counter``).

``zeroshot``: trains :class:`autometa.learners.ZeroShotProtoNet` on seven-segment MNIST
(see :func:`autometa.tasks.seven_segment_mnist`: prototypes from each digit's seven-segment
code, 5-way episodes over the 7 training digits, MNIST training images) and tests it on 600
3-way episodes of the held-out digits 2, 7, 9 (MNIST test images), against chance (1/3) and
the untrained network. Prints and writes mean ± 95% CI.

``evaluate``: tests a trained checkpoint (``checkpoints/best.pt`` of a run) on 600 test
episodes of the config with overrides, e.g. a ProtoNet trained on 60-way episodes tested at
20 ways, which ``autometa run --resume`` refuses (the tasks differ from the run's).

Needs ``AUTOMETA_DATA`` pointing at omniglot.npz / mnist.npz. Never asserts a time.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from autometa.experiment import evaluate
from autometa.learners import build_learner
from autometa.nets import Conv4
from autometa.tasks import make_tasks, seven_segment_mnist

CASES = [
    # (label, learner spec, ways, shots, queries)
    ("protonet 5w1s", {"name": "protonet"}, 5, 1, 15),
    ("protonet 60w1s (train episode)", {"name": "protonet"}, 60, 1, 5),
    ("protonet 20w1s", {"name": "protonet"}, 20, 1, 15),
    ("matchingnet 5w1s", {"name": "matchingnet"}, 5, 1, 15),
    ("matchingnet-fce 5w1s", {"name": "matchingnet", "fce": True}, 5, 1, 15),
    ("relationnet 5w1s", {"name": "relationnet"}, 5, 1, 15),
    ("siamese 5w1s", {"name": "siamese"}, 5, 1, 15),
    ("graphnet 5w1s", {"name": "graphnet", "max_ways": 5, "adjacency_hidden": 96}, 5, 1, 15),
    ("protonet 5w5s", {"name": "protonet"}, 5, 5, 15),
    ("relationnet 5w5s", {"name": "relationnet"}, 5, 5, 15),
]


def _timed(fn):
    c0, w0 = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - c0, time.perf_counter() - w0


def throughput(reps: int, train_episodes: int, eval_episodes: int) -> list[dict]:
    torch.set_num_threads(1)
    setups = []
    for label, spec, ways, shots, queries in CASES:
        tasks = make_tasks({"name": "omniglot", "ways": ways, "shots": shots, "queries": queries}, "train")
        gen = torch.Generator().manual_seed(0)
        train_batches = [tasks.sample(1, gen) for _ in range(train_episodes)]
        eval_batch = tasks.sample(eval_episodes, gen)
        torch.manual_seed(0)
        learner = build_learner(spec, Conv4(out_features=None, hidden=64), "classification")
        optimizer = torch.optim.Adam(learner.parameters(), lr=1e-3)

        def train(learner=learner, optimizer=optimizer, batches=train_batches):
            for batch in batches:
                optimizer.zero_grad(set_to_none=True)
                learner.meta_backward(batch)
                optimizer.step()

        def test(learner=learner, batch=eval_batch):
            learner.evaluate(batch)

        train()  # warm-up
        with FlopCounterMode(display=False) as counter:
            learner.meta_backward(train_batches[0])
        train_flops = counter.get_total_flops()
        with FlopCounterMode(display=False) as counter:
            learner.evaluate(eval_batch[0:1])
        setups.append({"label": label, "train": train, "test": test, "train_flops": train_flops,
                       "eval_flops": counter.get_total_flops(), "times": {"train": [], "test": []}})
    for _ in range(reps):  # alternate the learners within each round
        for s in setups:
            s["times"]["train"].append(_timed(s["train"]))
            s["times"]["test"].append(_timed(s["test"]))
    rows = []
    for s in setups:
        row = {"learner": s["label"], "train_flops_per_episode": s["train_flops"],
               "eval_flops_per_episode": s["eval_flops"]}
        for phase, count in (("train", train_episodes), ("test", eval_episodes)):
            cpu = statistics.median(t[0] for t in s["times"][phase])
            wall = statistics.median(t[1] for t in s["times"][phase])
            key = "train" if phase == "train" else "eval"
            row[f"{key}_episodes_per_cpu_s"] = count / cpu
            row[f"{key}_episodes_per_wall_s"] = count / wall
            row[f"{key}_gflops_per_cpu_s"] = s[f"{key}_flops"] * count / cpu / 1e9
        rows.append(row)
    base = rows[0]
    for row in rows:
        for key in ("train", "eval"):
            rate = f"{key}_episodes_per_cpu_s"
            row[f"{key}_cost_vs_protonet_5w1s"] = base[rate] / row[rate]
    print(f"{'learner':32s} {'train ep/s':>10s} {'(wall)':>7s} {'x cost':>6s} {'GFLOP/s':>7s} "
          f"{'eval ep/s':>9s} {'(wall)':>7s} {'x cost':>6s}")
    for r in rows:
        print(f"{r['learner']:32s} {r['train_episodes_per_cpu_s']:10.2f} "
              f"{r['train_episodes_per_wall_s']:7.2f} "
              f"{r['train_cost_vs_protonet_5w1s']:6.2f} {r['train_gflops_per_cpu_s']:7.1f} "
              f"{r['eval_episodes_per_cpu_s']:9.2f} {r['eval_episodes_per_wall_s']:7.2f} "
              f"{r['eval_cost_vs_protonet_5w1s']:6.2f}")
    return rows


def zeroshot(steps: int, test_tasks: int, seed: int = 0) -> dict:
    torch.set_num_threads(1)
    train = seven_segment_mnist("train", ways=5, queries=15)
    test = seven_segment_mnist("test", queries=15)
    torch.manual_seed(seed)
    learner = build_learner({"name": "zeroshot_protonet", "class_dim": 7},
                            Conv4(out_features=None, hidden=64), "classification")
    untrained = evaluate(learner, test, test_tasks, 50, seed=4321)["accuracy"]
    optimizer = torch.optim.Adam(learner.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(seed)
    c0, w0 = time.process_time(), time.perf_counter()
    for step in range(1, steps + 1):
        optimizer.zero_grad(set_to_none=True)
        metrics = learner.meta_backward(train.sample(1, gen))
        optimizer.step()
        if step % 100 == 0:
            print(f"step {step}: train loss {metrics['loss']:.3f} accuracy {metrics['accuracy']:.3f}",
                  file=sys.stderr)
    train_cpu, train_wall = time.process_time() - c0, time.perf_counter() - w0
    trained = evaluate(learner, test, test_tasks, 50, seed=4321)["accuracy"]
    result = {"steps": steps, "train_cpu_s": train_cpu, "train_wall_s": train_wall,
              "test_digits": [2, 7, 9], "test_ways": 3, "chance": 1 / 3,
              "untrained": {k: untrained[k] for k in ("mean", "ci95", "n")},
              "trained": {k: trained[k] for k in ("mean", "ci95", "n")}}
    print(f"zero-shot 3-way on unseen digits 2,7,9 ({test_tasks} episodes): trained "
          f"{100 * trained['mean']:.2f} ± {100 * trained['ci95']:.2f}%, untrained "
          f"{100 * untrained['mean']:.2f} ± {100 * untrained['ci95']:.2f}%, chance 33.33%; "
          f"{steps} steps in {train_cpu:.0f} s CPU / {train_wall:.0f} s wall")
    return result


def evaluate_checkpoint(config_path: str, checkpoint: str, overrides: list[str], test_tasks: int) -> dict:
    from autometa.experiment import build_experiment, load_checkpoint, load_config

    config = load_config(config_path, overrides)
    torch.set_num_threads(int(config["run"]["threads"] or 1))
    exp = build_experiment(config)
    exp.learner.load_state_dict(load_checkpoint(checkpoint)["learner"])
    c0, w0 = time.process_time(), time.perf_counter()
    run = config["run"]
    test = evaluate(exp.learner, exp.test, test_tasks, run["eval_batch"], run["test_seed"])
    acc = test["accuracy"]
    result = {"config": config_path, "checkpoint": checkpoint, "overrides": overrides,
              "tasks": config["tasks"], "accuracy": {k: acc[k] for k in ("mean", "ci95", "n")},
              "eval_cpu_s": time.process_time() - c0, "eval_wall_s": time.perf_counter() - w0}
    print(f"{config['tasks'].get('ways')}-way {config['tasks'].get('shots')}-shot test accuracy "
          f"{100 * acc['mean']:.2f} ± {100 * acc['ci95']:.2f}% over {acc['n']} episodes "
          f"({result['eval_cpu_s']:.0f} s CPU, {result['eval_wall_s']:.0f} s wall)")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["throughput", "zeroshot", "evaluate"])
    parser.add_argument("config", nargs="?", help="evaluate: the run's config")
    parser.add_argument("checkpoint", nargs="?", help="evaluate: e.g. RUN/checkpoints/best.pt")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--train-episodes", type=int, default=3)
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--test-tasks", type=int, default=600)
    parser.add_argument("--json")
    args = parser.parse_args()
    machine = {"python": sys.version.split()[0], "torch": torch.__version__, "platform": platform.platform(),
               "threads": 1}
    if args.what == "throughput":
        out = {"machine": machine, "rows": throughput(args.reps, args.train_episodes, args.eval_episodes)}
    elif args.what == "zeroshot":
        out = {"machine": machine, **zeroshot(args.steps, args.test_tasks)}
    else:
        if not (args.config and args.checkpoint):
            parser.error("evaluate needs CONFIG and CHECKPOINT")
        result = evaluate_checkpoint(args.config, args.checkpoint, args.set, args.test_tasks)
        out = {"machine": machine, **result}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
