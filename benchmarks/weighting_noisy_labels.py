"""The noisy-label study of issue #13: uniform CE, focal, GCE, CE fine-tuned on the clean set,
Meta-Weight-Net and L2RW, each with final, best (oracle) and clean-set-early-stopped test accuracy.

Writes ``runs.jsonl`` (one line per finished (cell, arm, seed); ``--resume`` continues), ``results.json``,
``summary.md`` and ``weight_curves.png`` (the learned weight against the loss) to ``--out``. Usage:

    OMP_WAIT_POLICY=PASSIVE nice -n 10 python benchmarks/weighting_noisy_labels.py \\
        experiments/weighting_fashion_mnist_budget.yaml --out benchmarks/weighting_budget --threads 1
"""

from __future__ import annotations

import argparse
import os
import platform

import torch

from autometa.compare._noisy_labels import run_study


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--out", required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--resume", action="store_true", help="continue the finished runs in --out")
    parser.add_argument("--overwrite", action="store_true", help="delete what --out holds first")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), {platform.processor() or platform.machine()}, "
          f"load {os.getloadavg()[0]:.1f}")
    run_study(args.config, args.out, resume=args.resume, overwrite=args.overwrite)
    print(f"load at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
