"""The slots refactor costs nothing: second-order MAML meta-steps before and after, alternating.

Runs the same meta-step (Conv4, Omniglot-shaped 5-way 1-shot, 15 queries, meta-batch 8, one inner
step, batching "loop", one thread) with the code of two git revisions in alternating subprocesses,
and reports CPU seconds per meta-step (robust to other load) and whether the meta-gradients are
bit-identical. Usage:

    git worktree add /tmp/old <old-revision>
    python benchmarks/slots_overhead.py --old /tmp/old --new . --reps 5 --out benchmarks/slots_overhead.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys

CHILD = r"""
import json, os, sys, time, hashlib
import torch
torch.set_num_threads(1)
from autometa.learners import MAML, MetaSGD
from autometa.nets import Conv4
name, steps = sys.argv[1], int(sys.argv[2])
g = torch.Generator().manual_seed(0)
B, ways, shots, queries = 8, 5, 1, 15
sx = torch.randn(B, ways * shots, 1, 28, 28, generator=g); sy = torch.arange(ways).repeat(B, shots).view(B, -1)
qx = torch.randn(B, ways * queries, 1, 28, 28, generator=g)
qy = torch.arange(ways).repeat_interleave(queries).repeat(B, 1)
class Batch:
    tensors = (sx, sy, qx, qy); support_x = sx
    def __len__(self): return B
torch.manual_seed(0)
cls = {"maml": MAML, "metasgd": MetaSGD}[name]
learner = cls(Conv4(out_features=ways), inner_lr=0.4, inner_steps=1, batching="loop")
learner.meta_backward(Batch())  # warm-up
times = []
for _ in range(steps):
    learner.zero_grad()
    t = time.process_time(); learner.meta_backward(Batch()); times.append(time.process_time() - t)
grads = [p.grad.numpy().tobytes() for p in learner.parameters() if p.grad is not None]
digest = hashlib.sha1(b"".join(grads)).hexdigest()
print(json.dumps({"cpu_s_per_step": sorted(times)[len(times) // 2], "grad_digest": digest}))
"""


def run(root: str, learner: str, steps: int) -> dict:
    env = {**os.environ, "PYTHONPATH": os.path.abspath(root), "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    out = subprocess.run([sys.executable, "-c", CHILD, learner, str(steps)], env=env, capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", required=True)
    parser.add_argument("--new", default=".")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--out")
    args = parser.parse_args()
    rows = {}
    for learner in ("maml", "metasgd"):
        old, new = [], []
        for _ in range(args.reps):  # alternating, so that load changes hit both alike
            old.append(run(args.old, learner, args.steps))
            new.append(run(args.new, learner, args.steps))
        o = statistics.median(r["cpu_s_per_step"] for r in old)
        n = statistics.median(r["cpu_s_per_step"] for r in new)
        rows[learner] = {"old_cpu_s": round(o, 4), "new_cpu_s": round(n, 4), "new_over_old": round(n / o, 3),
                         "bit_identical_meta_gradient": old[0]["grad_digest"] == new[0]["grad_digest"]}
        print(f"{learner:8s} old {o:.3f} CPU-s/step  new {n:.3f}  new/old {n / o:.3f}  "
              f"identical meta-gradient: {rows[learner]['bit_identical_meta_gradient']}")
    result = {"rows": rows, "machine": platform.processor() or platform.machine(), "load": os.getloadavg(),
              "reps": args.reps, "steps": args.steps}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
