"""Why the forgetting coreset scores far under the DC paper's numbers: which examples it keeps, and whether
it keeps them per class.

The DC paper (Zhao et al. 2021, Table 2) reports forgetting at 35.5 (MNIST) and 42.0 (Fashion-MNIST) with
1 image per class, far *under* random real images (64.9 / 51.4), without saying which examples it keeps.
Ours keeps the most forgotten images of every class and scores about 18 (stop 20-21). This script
fits one ``forgetting`` filler (its forgetting counts over a pool of real images) and evaluates four
selections from the *same* counts, each with the study's protocol for the dataset and the fixed test images:

- ``most_per_class``: the most forgotten ``ipc`` images of each class (the filler's own set);
- ``least_per_class``: the least forgotten of each class (never-learned images last);
- ``most_pool`` / ``least_pool``: the ``classes * ipc`` most / least forgotten images of the whole pool,
  whatever their classes, as Toneva et al.'s code orders them (DeepCore's first forgetting selector, by
  an author of the DC paper, takes the first ``coreset_size`` of that ascending order, with no per-class
  balance).

Ties (many images share a count) are broken by the filler's seeded random jitter. The label counts of
every selection are recorded. ``--seeds`` repeats all of it for several filler seeds (draws: another pool,
network and tie-breaking each), and reports each selection's mean and std over the draws' means, since a
whole-pool selection covers a different set of classes in every draw; ``--selections`` keeps some of the four.

Usage (about 16 CPU minutes for one draw of all four selections at 1 image per class; about 6 for one draw of
one selection)::

    AUTOMETA_DATA=../shared/data python benchmarks/forgetting_selection.py \
        --out benchmarks/distillation/forgetting_selection.json
    AUTOMETA_DATA=../shared/data python benchmarks/forgetting_selection.py --seeds 1,2,3,4,5 \
        --selections least_pool,least_per_class --out benchmarks/distillation/forgetting_selection_draws.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from autometa.compare._distillation import _test_subset, load_data, load_study_config, protocol_for
from autometa.slots.data import Forgetting, evaluate_support
from autometa.slots.data._coreset import top_per_class

# the studies whose protocol (evaluation, test images) each dataset is scored with
CONFIGS = {"mnist": "experiments/distill_mnist_forgetting20.yaml",
           "fashion_mnist": "experiments/distill_fashion_mnist_forgetting20.yaml"}
PUBLISHED = {"mnist": {1: 35.5, 10: 68.1}, "fashion_mnist": {1: 42.0, 10: 53.9}}
SELECTIONS = ("most_per_class", "least_per_class", "most_pool", "least_pool")


def selections(filler: Forgetting, y_pool: torch.Tensor, classes: int, ipc: int) -> dict[str, torch.Tensor]:
    """Pool positions of the four selections, from the filler's scores (higher: forgotten more often)."""
    score = filler.forgetting_score.cpu()
    return {"most_per_class": top_per_class(score, y_pool, classes, ipc),
            "least_per_class": top_per_class(score, y_pool, classes, ipc, descending=False),
            "most_pool": score.argsort(descending=True)[:classes * ipc],
            "least_pool": score.argsort()[:classes * ipc]}


def draw(args, dataset: str, seed: int, data: dict, protocol, test: tuple, names: list[str]) -> dict:
    """One filler seed on one dataset: its forgetting counts and the chosen selections' scores."""
    x_test, y_test = test
    classes = int(data["y"].max()) + 1
    start = time.process_time()
    filler = Forgetting(ipc=args.ipc, epochs=args.epochs, pool=args.pool, seed=seed).fit(data["x"], data["y"])
    fit_cpu_s = time.process_time() - start
    y_pool = data["y"][filler.pool_index].cpu()
    learned = torch.isfinite(filler.forgetting_score).cpu()
    events = filler.forgetting_events.cpu()
    rows = {}
    for name, chosen in selections(filler, y_pool, classes, args.ipc).items():
        if name not in names:
            continue
        x_set, y_set = data["x"][filler.pool_index[chosen]], y_pool[chosen]
        if name == "most_per_class":  # the filler's own set: the same images
            assert torch.equal(x_set, filler.support()[0]), "most_per_class must be the filler's set"
        result = evaluate_support(x_set, y_set, x_test, y_test, protocol, seeds=range(args.nets), classes=classes)
        rows[name] = {"accuracies": result["accuracies"], "mean": 100 * result["mean"],
                      "std": 100 * result["std"], "eval_cpu_s": result["cpu_s"],
                      "label_counts": torch.bincount(y_set, minlength=classes).tolist(),
                      "events": events[chosen].tolist(), "never_learned": int((~learned[chosen]).sum())}
        print(f"{dataset} ipc {args.ipc} seed {seed} {name:>15}: {rows[name]['mean']:.2f} ± {rows[name]['std']:.2f}"
              f"  classes {rows[name]['label_counts']}  events {rows[name]['events'][:10]}", flush=True)
    return {"fit_cpu_s": fit_cpu_s, "test_images": len(y_test),
            "protocol": {"epochs": protocol.epochs, "augment": protocol.augment, "augment_mode": protocol.augment_mode},
            "pool_never_learned": int((~learned).sum()), "pool_zero_events": int((learned & (events == 0)).sum()),
            "pool_size": len(y_pool), "selections": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", default="mnist,fashion_mnist")
    parser.add_argument("--ipc", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=3, help="training epochs over the pool that count forgetting")
    parser.add_argument("--pool", type=int, default=500, help="real images per class in the pool")
    parser.add_argument("--nets", type=int, default=3)
    parser.add_argument("--seeds", default="0", help="filler seeds (draws), comma-separated")
    parser.add_argument("--selections", default=",".join(SELECTIONS), help="which of the four to score")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    names = args.selections.split(",")
    if unknown := [n for n in names if n not in SELECTIONS]:
        parser.error(f"unknown selections {unknown}: choose among {', '.join(SELECTIONS)}")
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        parser.error(f"--seeds must be comma-separated integers, e.g. 1,2,3. Got {args.seeds!r}")
    torch.set_num_threads(args.threads)
    report = {"machine": platform.processor() or platform.machine(), "torch": torch.__version__,
              "threads": args.threads, "ipc": args.ipc, "epochs": args.epochs, "pool": args.pool, "seeds": seeds,
              "results": {}}
    for dataset in args.datasets.split(","):
        config = load_study_config(CONFIGS[dataset])
        data = load_data(config, dataset)
        protocol, test_size = protocol_for(config, config["arms"]["forgetting"], dataset)
        test = _test_subset(data, test_size)
        draws = {seed: draw(args, dataset, seed, data, protocol, test, names) for seed in seeds}
        summary = {}
        for name in names:
            means = torch.tensor([d["selections"][name]["mean"] for d in draws.values()], dtype=torch.float64)
            summary[name] = {"draws": len(means), "mean": means.mean().item(),
                             "std": means.std().item() if len(means) > 1 else 0.0, "draw_means": means.tolist()}
            print(f"{dataset} ipc {args.ipc} {name:>15}: {summary[name]['mean']:.2f} ± {summary[name]['std']:.2f} "
                  f"over {len(means)} draws", flush=True)
        report["results"][dataset] = {"published": PUBLISHED[dataset].get(args.ipc), "summary": summary,
                                      "draws": {str(seed): d for seed, d in draws.items()}}
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
