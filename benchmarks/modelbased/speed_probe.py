"""Seconds per meta-step of one filler of a comparison on one device (used by gpu_jobs.sh).

Builds the filler's run exactly as ``autometa compare`` would (same tasks, network, learner, outer
settings), times ``--steps`` meta-steps (sample, move to the device, meta_backward, optimizer
step, synchronise) after ``--warmup`` untimed ones, and prints one JSON line:

    {"device": "cuda", "filler": "mann", "s_per_step": 0.12, "meta_batch": 64, ...}

A recurrent learner on a GPU that other processes share can be slower than on a CPU core (every
time step is a chain of tiny kernels); gpu_jobs.sh runs this on both and uses the faster device.

    python benchmarks/modelbased/speed_probe.py experiments/compare_mann_omniglot_gpu.yaml mann cuda
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import yaml

from autometa.compare._compare import filler_config
from autometa.experiment import build_experiment, load_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("filler")
    parser.add_argument("device")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--meta-batch", type=int, default=None, help="episodes a step (default: the config's)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    comp = yaml.safe_load(open(args.config))["comparisons"][0]
    config = filler_config(comp, comp["fillers"][args.filler], 0)
    config["run"]["device"] = args.device
    if args.meta_batch:
        config["outer"]["meta_batch"] = args.meta_batch
    config = load_config(config)
    exp = build_experiment(config)
    learner = exp.learner.to(args.device)
    optimizer = torch.optim.Adam([p for p in learner.parameters() if p.requires_grad], lr=config["outer"]["lr"])
    generator = torch.Generator().manual_seed(0)
    sync = torch.cuda.synchronize if torch.device(args.device).type == "cuda" else (lambda: None)
    start = None
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            sync()
            start = time.perf_counter()
        batch = exp.train.sample(config["outer"]["meta_batch"], generator).to(args.device)
        optimizer.zero_grad(set_to_none=True)
        learner.meta_backward(batch)
        optimizer.step()
    sync()
    seconds = (time.perf_counter() - start) / args.steps
    print(json.dumps({"device": args.device, "filler": args.filler, "s_per_step": round(seconds, 4),
                      "meta_batch": config["outer"]["meta_batch"],
                      "episodes_per_s": round(config["outer"]["meta_batch"] / seconds, 1)}))


if __name__ == "__main__":
    main()
