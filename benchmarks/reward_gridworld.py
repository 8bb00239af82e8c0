"""Learned intrinsic reward (LIRPG) against hand-crafted rewards on a one-goal grid world.

For each seed and arm (extrinsic only, SimHash count bonus, LIRPG reward network, the same network
frozen at its random initialisation), REINFORCE trains a tabular softmax policy (zero-initialised)
from batches of episodes; reported: environment steps until the mean return of the last
``--window`` batches reaches ``--threshold`` (runs that never reach it within ``--batches`` batches
are reported as not reached and left out of the mean, with their count), with a 95% CI over seeds
and the paired difference to the extrinsic arm. Usage:

    OMP_WAIT_POLICY=PASSIVE nice -n 10 python benchmarks/reward_gridworld.py --seeds 10 \\
        --out benchmarks/reward_gridworld.json

The same runs (same seeds, same numbers) go through ``autometa compare experiments/reward_gridworld.yaml``
(the reward study, :mod:`autometa.compare._reward_study`), which also writes a report.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch
from torch import nn

from autometa.compare._stats import paired_difference
from autometa.experiment._stats import mean_ci
from autometa.learners import GridWorld, LIRPGTrainer


def arms(env: GridWorld, seed: int) -> dict:
    sizes = {"observation_dim": env.observation_dim, "num_actions": env.num_actions}
    return {
        "extrinsic": "extrinsic",
        "count_bonus": {"name": "count_bonus", "observation_dim": env.observation_dim, "bonus": 0.1, "seed": seed},
        "reward_net": {"name": "reward_net", **sizes, "hidden": 32, "scale": 0.1, "seed": seed},
        "frozen_reward_net": {"name": "frozen_reward_net", **sizes, "hidden": 32, "scale": 0.1, "seed": seed},
    }


def run(env: GridWorld, reward, seed: int, args) -> dict:
    policy = nn.Linear(env.observation_dim, env.num_actions)
    with torch.no_grad():
        policy.weight.zero_()
        policy.bias.zero_()
    trainer = LIRPGTrainer(policy, reward, lr=args.lr, meta_lr=args.meta_lr, gamma=args.gamma)
    generator = torch.Generator().manual_seed(seed)
    steps, history, reached = 0, [], None
    start = time.process_time()
    for _ in range(args.batches):
        batch = env.rollout(policy, trainer.params(), args.episodes, generator)
        metrics = trainer.step(batch)
        steps += metrics["steps"]
        history.append(metrics["mean_return"])
        if reached is None and len(history) >= args.window and np.mean(history[-args.window:]) >= args.threshold:
            reached = steps
            break
    return {"seed": seed, "steps_to_threshold": reached, "steps": steps, "returns": history,
            "cpu_s": time.process_time() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--size", type=int, default=6)
    parser.add_argument("--max-steps", type=int, default=40)
    parser.add_argument("--episodes", type=int, default=8)
    parser.add_argument("--batches", type=int, default=150)
    parser.add_argument("--threshold", type=float, default=0.8)
    parser.add_argument("--window", type=int, default=5)
    parser.add_argument("--lr", type=float, default=0.5)
    parser.add_argument("--meta-lr", type=float, default=1e-2)
    parser.add_argument("--gamma", type=float, default=0.99)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    env = GridWorld(args.size, args.max_steps)
    print(f"torch {torch.__version__}, 1 thread, load {os.getloadavg()[0]:.1f}; grid {args.size}x{args.size}, "
          f"{args.episodes} episodes/batch, threshold {args.threshold} over {args.window} batches")
    results: dict = {name: [] for name in arms(env, 0)}
    for seed in range(args.seeds):
        for name, reward in arms(env, seed).items():
            r = run(env, reward, seed, args)
            results[name].append(r)
            print(f"seed {seed} {name:>18}: steps to threshold {r['steps_to_threshold']}  ({r['cpu_s']:.1f} CPU s)",
                  flush=True)
    summary = {}
    ref = {r["seed"]: r["steps_to_threshold"] for r in results["extrinsic"]}
    for name, runs in results.items():
        reached = [r["steps_to_threshold"] for r in runs if r["steps_to_threshold"] is not None]
        entry = {"steps": mean_ci(reached), "not_reached": len(runs) - len(reached),
                 "cpu_s": float(sum(r["cpu_s"] for r in runs))}
        pairs = [(r["steps_to_threshold"], ref[r["seed"]]) for r in runs
                 if r["steps_to_threshold"] is not None and ref.get(r["seed"]) is not None]
        if name != "extrinsic" and len(pairs) >= 2:
            entry["vs_extrinsic"] = paired_difference([a for a, _ in pairs], [b for _, b in pairs])
        summary[name] = entry
    lines = ["| reward | seeds reached | env steps to threshold (mean ± 95% CI) | vs extrinsic (paired) | CPU s |",
             "| --- | --- | --- | --- | --- |"]
    for name, s in summary.items():
        st = s["steps"]
        mean = "-" if st["mean"] is None else f"{st['mean']:.0f}" + (f" ± {st['ci95']:.0f}" if st["ci95"] else "")
        diff = s.get("vs_extrinsic")
        diff_text = "-" if diff is None else (f"{diff['mean']:+.0f} ± {diff['ci95']:.0f} (p={diff['p_value']:.2g})"
                                              if diff.get("ci95") is not None else f"{diff['mean']:+.0f}")
        lines.append(f"| {name} | {st['n']}/{st['n'] + s['not_reached']} | {mean} | {diff_text} | {s['cpu_s']:.0f} |")
    table = "\n".join(lines)
    print(table)
    with open(args.out, "w") as f:
        json.dump({"args": vars(args), "summary": summary, "results": results, "table": table}, f)


if __name__ == "__main__":
    main()
