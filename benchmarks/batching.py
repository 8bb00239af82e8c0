"""Loop, threads or ``torch.func.vmap`` over the tasks of a meta-batch: which is faster, per model.

autometa's second-order MAML (``autometa.learners.MAML``) meta-gradient step with each
``batching`` mode, on

- Conv4 (64 filters), Omniglot 5-way 1-shot, 15 queries per class, meta-batch 32, 1 inner step;
- the MAML sinusoid MLP (40-40), K = 10 support and 10 query points, meta-batch 25, 1 inner step.

One process, the modes alternating (order rotated each repetition), the same tasks and the same
initial weights for every mode; medians over repetitions. The meta-gradient of each mode is
compared with the loop's (max |a - b| / max |b| over all parameters). The result decides
``autometa.hypergrad.default_batching``.

Usage::

    AUTOMETA_DATA=/work/shared/data nice -n 5 python benchmarks/batching.py --threads 2 \
        --json benchmarks/batching.json

``OMP_WAIT_POLICY`` defaults to ``PASSIVE`` here (see benchmarks/RESULTS.md: with the
default spinning policy, two-thread OpenMP regions stall when other processes load the CPU).
Timings are printed and written, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP

import torch

from autometa.learners import MAML
from autometa.nets import MLP, Conv4
from autometa.tasks import make_tasks

CASES = {
    "conv4-omniglot-5w1s": dict(spec={"name": "omniglot", "ways": 5, "shots": 1, "queries": 15}, meta_batch=32,
                                net=lambda: Conv4(1, 5, hidden=64), task="classification", inner_lr=0.4),
    "mlp40-sinusoid-k10": dict(spec={"name": "sinusoid", "shots": 10, "queries": 10}, meta_batch=25,
                               net=lambda: MLP(1, 1, (40, 40)), task="regression", inner_lr=0.01),
}


def measure(case: dict, modes: list[str], reps: int, steps: int) -> dict:
    tasks = make_tasks(case["spec"], "train")
    gen = torch.Generator().manual_seed(0)
    batches = [tasks.sample(case["meta_batch"], gen) for _ in range(steps)]
    torch.manual_seed(0)
    init = case["net"]().state_dict()
    learners = {}
    for mode in modes:
        model = case["net"]()
        model.load_state_dict(init)
        learners[mode] = MAML(model, inner_lr=case["inner_lr"], inner_steps=1, task=case["task"], batching=mode)
    grads, times, cpu_times = {}, {m: [] for m in modes}, {m: [] for m in modes}
    for mode, learner in learners.items():  # warm-up, and the gradient check on batch 0
        learner.zero_grad()
        learner.meta_backward(batches[0])
        grads[mode] = [p.grad.clone() for p in learner.parameters()]
    for rep in range(reps):
        order = modes[rep % len(modes):] + modes[:rep % len(modes)]
        for mode in order:
            start, cpu_start = time.perf_counter(), time.process_time()
            for batch in batches:
                learners[mode].zero_grad()
                learners[mode].meta_backward(batch)
            times[mode].append((time.perf_counter() - start) / steps)
            cpu_times[mode].append((time.process_time() - cpu_start) / steps)
    ref = grads[modes[0]]
    scale = max(float(r.abs().max()) for r in ref)
    out = {}
    for mode in modes:
        step_s = statistics.median(times[mode])
        cpu_s = statistics.median(cpu_times[mode])
        out[mode] = {"s_per_step": step_s, "tasks_per_s": case["meta_batch"] / step_s, "all": times[mode],
                     "cpu_s_per_step": cpu_s, "all_cpu": cpu_times[mode],
                     "grad_rel_diff_vs_loop": max(float((g - r).abs().max()) for g, r in zip(grads[mode], ref)) / scale}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--modes", nargs="+", default=["loop", "vmap", "threads"])
    parser.add_argument("--cases", nargs="+", default=list(CASES))
    parser.add_argument("--json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = {"torch": torch.__version__, "threads": args.threads, "omp_wait_policy": os.environ["OMP_WAIT_POLICY"],
               "load_start": os.getloadavg(), "cases": {}}
    for name in args.cases:
        steps = 1 if name.startswith("conv4") else 20
        reps = args.reps
        results["cases"][name] = measure(CASES[name], args.modes, reps, steps)
        print(f"\n{name} (CPU, {args.threads} threads, torch {torch.__version__}, {reps} reps)")
        print(f"{'batching':10s} {'s/step':>8s} {'tasks/s':>8s} {'vs loop':>8s} {'CPU s/step':>10s} {'vs loop':>8s} "
              f"{'grad diff vs loop':>18s}")
        loop = results["cases"][name]["loop"]
        for mode, r in results["cases"][name].items():
            speedup = loop['s_per_step'] / r['s_per_step']
            print(f"{mode:10s} {r['s_per_step']:8.4f} {r['tasks_per_s']:8.1f} {speedup:7.2f}x "
                  f"{r['cpu_s_per_step']:10.4f} {loop['cpu_s_per_step'] / r['cpu_s_per_step']:7.2f}x "
                  f"{r['grad_rel_diff_vs_loop']:18.1e}", flush=True)
    results["load_end"] = os.getloadavg()
    print(f"\nload average {results['load_start']} -> {results['load_end']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
