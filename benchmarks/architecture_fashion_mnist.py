"""DARTS against random search at equal budget and hand-crafted cells on Fashion-MNIST, paired per seed.

Arms (every selected network retrained from scratch with the one protocol of
``autometa.slots.architecture.train_network`` and tested on the same official test images):

- ``darts_first_early_stop``: DARTS first order with the DARTS+ early stop (2 skip connections);
- ``darts_second``: DARTS second order (finite-difference Hessian-vector product), optional;
- ``random_search``: random cells of the same space, searched through ``autometa.search`` (Optuna's
  random sampler over ``RandomCell.seed``): each trial trains the cell for ``--proxy-steps`` steps on
  the weights half and scores it on the α half; trials continue until the CPU time of the DARTS
  first-order search of the same seed is spent (equal budget);
- ``sep_conv_cell``, ``resnet_cell``, ``conv4``: hand-crafted.

Prints a table and writes JSON: per arm the test accuracy per seed, mean ± 95% CI over seeds, the
paired difference to random search over seeds, and CPU seconds (search, retraining).

    python benchmarks/architecture_fashion_mnist.py --seeds 0 1 2 --out benchmarks/architecture_fashion_mnist.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from autometa.compare._stats import paired_difference
from autometa.experiment._architecture import _images
from autometa.experiment._stats import mean_ci
from autometa.search import search as search_api
from autometa.slots.architecture import (
    DARTS,
    Conv4Architecture,
    RandomCell,
    ResNetCell,
    SepConvCell,
    search,
    train_network,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--search-images", type=int, default=2000, help="split in two halves (weights, α)")
    parser.add_argument("--test-images", type=int, default=2000, help="the first N of the official test set")
    parser.add_argument("--primitives", default="reduced")
    parser.add_argument("--init-channels", type=int, default=4)
    parser.add_argument("--layers", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--search-epochs", type=int, default=3)
    parser.add_argument("--retrain-epochs", type=int, default=2)
    parser.add_argument("--proxy-steps", type=int, default=20, help="training steps per random-search trial")
    parser.add_argument("--second-order", action="store_true", help="also run DARTS second order")
    parser.add_argument("--only-second-order", action="store_true",
                        help="run DARTS second order alone (no first order, random search or hand-crafted cells)")
    parser.add_argument("--out", default="benchmarks/architecture_fashion_mnist.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cell = {"init_channels": args.init_channels, "layers": args.layers}
    protocol = {"epochs": args.retrain_epochs, "batch_size": 64}
    rows: dict[str, dict] = {}

    def record(arm: str, seed: int, out: dict, search_cpu: float, extra: dict | None = None) -> None:
        row = rows.setdefault(arm, {"accuracy": [], "search_cpu_s": [], "retrain_cpu_s": [], "extra": []})
        row["accuracy"].append(out["test_accuracy"])
        row["search_cpu_s"].append(search_cpu)
        row["retrain_cpu_s"].append(out["cpu_s"])
        row["extra"].append(extra or {})
        print(f"seed {seed} {arm:24s} test acc {out['test_accuracy']:.4f}  search {search_cpu:7.1f} CPU-s  "
              f"retrain {out['cpu_s']:6.1f} CPU-s  {extra or ''}", flush=True)

    for seed in args.seeds:
        x, y = _images("fashion_mnist", True, args.search_images, seed)
        test_x, test_y = _images("fashion_mnist", False, args.test_images, seed)
        darts_arms = [("darts_first_early_stop", {"order": "first", "remedy": "early_stop"})]
        if args.second_order or args.only_second_order:
            darts_arms.append(("darts_second", {"order": "second"}))
        if args.only_second_order:
            darts_arms = darts_arms[1:]
        budget = None
        for arm, spec in darts_arms:
            darts = DARTS(primitives=args.primitives, batch_size=args.batch_size, epochs=args.search_epochs,
                          seed=seed, **cell, **spec)
            found = search(darts, x, y, 10, eigenvalue_iterations=10)
            budget = found.cpu_s if budget is None else budget
            last = found.history[-1]
            record(arm, seed, train_network(darts, x, y, test_x, test_y, seed=seed, num_classes=10, **protocol),
                   found.cpu_s, {"epochs": len(found.history), "stopped_early": found.stopped_early,
                                 "parameter_free": [h["parameter_free"] for h in found.history],
                                 "eigenvalue": [h["eigenvalue"] for h in found.history],
                                 "genotype": last["genotype"]})
        if args.only_second_order:
            continue
        # random search at the DARTS first-order search's CPU budget, through the search API
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
        w_half, a_half = order[: len(x) // 2], order[len(x) // 2:]
        spent, trials = 0.0, []

        def objective(trial, x=x, y=y, w_half=w_half, a_half=a_half, trials=trials, seed=seed):
            candidate = RandomCell(seed=trial.suggest("seed"), primitives=args.primitives, **cell)
            start = time.process_time()
            out = train_network(candidate, x[w_half], y[w_half], x[a_half], y[a_half], epochs=1,
                                batch_size=args.batch_size, max_steps=args.proxy_steps, seed=seed, num_classes=10)
            trials.append((out["test_accuracy"], candidate.seed, time.process_time() - start))
            return out["test_accuracy"]

        while spent < budget:
            search_api(objective, {"seed": {"int": [0, 1_000_000]}}, backend="optuna", sampler="random",
                       n_trials=1, seed=seed * 1000 + len(trials), direction="maximize")
            spent = sum(t[2] for t in trials)
        best = max(trials)
        winner = RandomCell(seed=best[1], primitives=args.primitives, **cell)
        record("random_search", seed, train_network(winner, x, y, test_x, test_y, seed=seed, num_classes=10,
                                                    **protocol), spent,
               {"trials": len(trials), "best_proxy_accuracy": best[0], "cell_seed": best[1]})
        for arm, filler in (("sep_conv_cell", SepConvCell(**cell)), ("resnet_cell", ResNetCell(**cell)),
                            ("conv4", Conv4Architecture(hidden=32))):
            record(arm, seed, train_network(filler, x, y, test_x, test_y, seed=seed, num_classes=10, **protocol),
                   0.0)

    summary = {}
    print(f"\n{'arm':24s} {'test accuracy (mean ± 95% CI over seeds)':42s} {'Δ vs random search (paired)':32s} "
          f"search CPU-s")
    for arm, row in rows.items():
        ci = mean_ci(row["accuracy"])
        diff = (paired_difference(row["accuracy"], rows["random_search"]["accuracy"])
                if "random_search" in rows and arm != "random_search" and len(row["accuracy"]) > 1 else None)
        summary[arm] = {**row, "mean_ci": ci, "vs_random_search": diff}
        half = f"{ci['ci95']:.4f}" if ci["ci95"] is not None else "n/a"
        delta = ""
        if diff and diff.get("ci95") is not None:
            p = diff.get("p_value")
            delta = f"{diff['mean']:+.4f} ± {diff['ci95']:.4f}" + (f" (p {p:.2f})" if p is not None else "")
        cpu = sum(row["search_cpu_s"]) / len(row["search_cpu_s"])
        print(f"{arm:24s} {ci['mean']:.4f} ± {half:34s} {delta:32s} {cpu:.1f}")
    result = {"args": vars(args), "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
              "arms": summary}
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1, default=str)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
