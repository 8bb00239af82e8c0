"""vmap against the loop, float32 against float64: MAML meta-gradients of Conv4 on a CPU (issue 15).

Second-order MAML, Conv4 (64 filters, autometa's batch norm with batch statistics), Omniglot 5-way
1-shot with 15 queries (meta-training classes), 4 tasks, inner lr 0.4, 1 and 5 inner steps. Each
meta-gradient is compared with the loop's in float64 (max |a - b| / max |b| over all parameters).

    AUTOMETA_DATA=../shared/data python benchmarks/vmap_precision_cpu.py benchmarks/vmap_precision_cpu.json
"""

import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from autometa.learners import MAML
from autometa.nets import Conv4
from autometa.tasks import TaskBatch, make_tasks


def meta_grad(batch, mode, dtype, steps):
    torch.manual_seed(0)
    learner = MAML(Conv4(1, 5, hidden=64).to(dtype), inner_lr=0.4, inner_steps=steps, batching=mode)
    learner.meta_backward(TaskBatch(*(t.to(dtype) if t.is_floating_point() else t for t in batch.tensors)))
    return torch.cat([p.grad.reshape(-1).double() for p in learner.parameters()])


def main(out=None):
    tasks = make_tasks({"name": "omniglot", "ways": 5, "shots": 1, "queries": 15}, "train")
    batch = tasks.sample(4, torch.Generator().manual_seed(1))
    results = {"torch": torch.__version__, "threads": torch.get_num_threads(), "load_start": os.getloadavg(),
               "rows": []}
    for steps in (1, 5):
        start = time.perf_counter()
        ref = meta_grad(batch, "loop", torch.float64, steps)
        row = {"inner_steps": steps}
        for mode in ("loop", "vmap"):
            for dtype in ("float32", "float64"):
                grad = meta_grad(batch, mode, getattr(torch, dtype), steps)
                row[f"{mode}/{dtype}"] = float((grad - ref).abs().max() / ref.abs().max())
        row["seconds"] = round(time.perf_counter() - start, 1)
        results["rows"].append(row)
        print(json.dumps(row), flush=True)
    results["load_end"] = os.getloadavg()
    if out:
        with open(out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main(*sys.argv[1:])
