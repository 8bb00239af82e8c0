"""The cost of a DARTS search epoch: autometa's DARTS against NNI's one-shot DARTS, same space, data and process.

Both search the same space, built by each library: the reduced 5-operation space (none, max pool 3x3,
skip, sep conv 3x3, dil conv 3x3), cells of 2 inputs + 4 intermediate nodes (14 mixed edges), 3 cells
(normal, reduction, reduction) of 4 initial channels, stem of 3 x 4 channels; first order (NNI's DARTS
has no second order), Adam 3e-4 / betas (0.5, 0.999) / weight decay 1e-3 on α, gradient clip 5, batch
32; the same Fashion-MNIST images (seed 0: 20000 training images split in two halves of 10000, α on
one, weights on the other). NNI's space (``nni.nas.hub.pytorch.nasnet.NDS``, ``dataset="cifar"``) has
a 3-channel stem, so it gets each gray image repeated on 3 channels (the stem is < 1% of the cost).
Differences that remain: NNI's weights use plain SGD (its ``Classification`` evaluator passes no
momentum), autometa's SGD with momentum 0.9 and weight decay 3e-4; NNI runs through PyTorch
Lightning (``pytorch-lightning<2``, which NNI 3.0 needs).

Each library takes ``--steps`` α/w step pairs (after ``--warmup`` untimed ones); the CPU time of the
steps alone (process time, batch start to end for NNI via a Lightning callback, the search loop minus
its per-epoch diagnostics for autometa) is divided by the steps and multiplied by one epoch's steps
(10000 / 32 = 312). Writes JSON beside this file.

    PYTHONPATH=/path/to/setuptools-below-81:. python benchmarks/darts/nni_epoch_cost.py
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
import warnings

import torch

from autometa.experiment._architecture import _images
from autometa.slots.architecture import DARTS, REDUCED_PRIMITIVES, search
from autometa.slots.architecture._search import _halves


def ours(x, y, steps: int, warmup: int, batch: int) -> dict:
    darts = DARTS(primitives="reduced", init_channels=4, layers=3, batch_size=batch, order="first", seed=0)
    search(darts, x, y, 10, epochs=1, steps_per_epoch=warmup, eigenvalue_batches=0)  # untimed warm-up
    darts = DARTS(primitives="reduced", init_channels=4, layers=3, batch_size=batch, order="first", seed=0)
    found = search(darts, x, y, 10, epochs=1, steps_per_epoch=steps, eigenvalue_batches=0)
    network = darts.build_network(tuple(x.shape[1:]), 10)
    return {"steps": found.steps, "cpu_s": found.cpu_s - found.diagnostics_cpu_s,
            "cpu_s_per_step": (found.cpu_s - found.diagnostics_cpu_s) / found.steps,
            "weights": sum(p.numel() for p in network.parameters()),
            "alphas": darts.normal.numel() + darts.reduce.numel()}


def nni_darts(x, y, steps: int, warmup: int, batch: int) -> dict:
    import nni
    import pytorch_lightning as pl
    from nni.nas.evaluator.pytorch import Classification, DataLoader
    from nni.nas.hub.pytorch.nasnet import NDS
    from nni.nas.strategy import DARTS as NNIDARTS

    class Timer(pl.Callback):
        def __init__(self):
            self.times, self.start = [], None

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            self.start = time.process_time()

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            self.times.append(time.process_time() - self.start)

    torch.manual_seed(0)
    x3 = x.repeat(1, 3, 1, 1)
    w_half, a_half = _halves(len(x), 0)
    train = torch.utils.data.TensorDataset(x3[w_half], y[w_half])
    val = torch.utils.data.TensorDataset(x3[a_half], y[a_half])
    space = NDS(op_candidates=[op for op in REDUCED_PRIMITIVES], merge_op="all", num_nodes_per_cell=4, width=4,
                num_cells=3, dataset="cifar")
    timer = Timer()
    evaluator = Classification(
        learning_rate=0.025, weight_decay=3e-4, optimizer=torch.optim.SGD,
        train_dataloaders=DataLoader(train, batch_size=batch, shuffle=True),
        val_dataloaders=DataLoader(val, batch_size=batch, shuffle=True), num_classes=10,
        max_epochs=1, limit_train_batches=warmup + steps, limit_val_batches=0, num_sanity_val_steps=0,
        accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[timer])
    strategy = NNIDARTS(gradient_clip_val=5.0)
    supernet = strategy.mutate_model(space)
    oneshot = strategy.mutate_evaluator(evaluator)
    weights = sum(p.numel() for n, p in supernet.named_parameters() if "_arch_alpha" not in n)
    alphas = sum(p.numel() for n, p in supernet.named_parameters() if "_arch_alpha" in n)
    start = time.process_time()
    oneshot.evaluate(supernet)
    total = time.process_time() - start
    timed = timer.times[warmup:]
    return {"steps": len(timed), "cpu_s": sum(timed), "cpu_s_per_step": sum(timed) / len(timed),
            "fit_cpu_s_with_setup_and_warmup": total, "weights": weights, "alphas": alphas,
            "nni": nni.__version__, "pytorch_lightning": pl.__version__}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", default="benchmarks/darts/nni_epoch_cost.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    x, y = _images("fashion_mnist", True, 20000, 0)
    per_epoch = (len(x) // 2) // args.batch_size
    wall = time.perf_counter()
    result = {"args": vars(args), "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
              "steps_per_epoch": per_epoch}
    for name, fn in (("autometa", ours), ("nni", nni_darts), ("autometa_again", ours)):
        out = fn(x, y, args.steps, args.warmup, args.batch_size)
        out["epoch_cpu_s"] = out["cpu_s_per_step"] * per_epoch
        result[name] = out
        print(name, {k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()}, flush=True)
    result["wall_s"] = time.perf_counter() - wall
    result["nni_over_autometa"] = result["nni"]["cpu_s_per_step"] / (
        (result["autometa"]["cpu_s_per_step"] + result["autometa_again"]["cpu_s_per_step"]) / 2)
    print("NNI / autometa CPU per step:", round(result["nni_over_autometa"], 3))
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
