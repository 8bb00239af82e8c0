"""Run an augmentation study (``study: augmentation``) with one process per seed, then report it through
``autometa compare``.

The study runner is sequential; on a shared CPU one process per seed gets more of it. Each seed runs
as ``autometa compare SHARD --out OUT/shards/seedN`` (a copy of the config with ``seeds: [N]``); their
``runs.jsonl`` are merged into ``OUT``, and ``autometa compare CONFIG --out OUT`` then finds every run
done and writes ``summary.md``, ``results.json`` and ``policies.png``, exactly as a single-process run.

    python benchmarks/augmentation/run_study.py experiments/augmentation_fashion_mnist_budget.yaml \
        --out benchmarks/augmentation/fashion_mnist_budget
    python benchmarks/augmentation/run_study.py CONFIG --out OUT --merge-only   # shards already ran
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from autometa.compare import compare
from autometa.compare._augmentation import load_study_config


def run_shards(config_path: Path, out: Path) -> None:
    config = yaml.safe_load(config_path.read_text())
    procs = []
    for seed in config["seeds"]:
        shard_dir = out / "shards" / f"seed{seed}"
        shard_dir.parent.mkdir(parents=True, exist_ok=True)
        shard_config = out / "shards" / f"seed{seed}.yaml"
        shard_config.write_text(yaml.safe_dump({**config, "seeds": [seed]}, sort_keys=False))
        log = open(out / "shards" / f"seed{seed}.log", "w")
        env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE", "PYTHONUNBUFFERED": "1"}
        procs.append(subprocess.Popen([sys.executable, "-m", "autometa.cli", "compare", str(shard_config), "--out",
                                       str(shard_dir)], stdout=log, stderr=subprocess.STDOUT, env=env))
    try:
        codes = [p.wait() for p in procs]
    finally:  # interrupted (Ctrl-C, SIGTERM through Python's handler): take the shards down too
        for p in procs:
            if p.poll() is None:
                p.terminate()
    if any(codes):
        raise SystemExit(f"a shard failed (exit codes {codes}); see {out / 'shards'}/*.log")


def merge(config_path: Path, out: Path, shard_dirs: list[Path]) -> None:
    lines = []
    for shard in shard_dirs:
        lines += (shard / "runs.jsonl").read_text().splitlines()
    out.mkdir(parents=True, exist_ok=True)
    (out / "runs.jsonl").write_text("\n".join(lines) + "\n")
    (out / "config.json").write_text(json.dumps(load_study_config(str(config_path)), indent=2))
    marker = out / "autometa.json"
    if not marker.exists():
        marker.write_text((shard_dirs[0] / "autometa.json").read_text())


def main() -> None:
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that run_shards' finally runs on kill
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--merge-only", action="store_true", help="the shards already ran under OUT/shards")
    parser.add_argument("--shards", type=Path, nargs="*", help="shard directories (default OUT/shards/seed*)")
    args = parser.parse_args()
    if not args.merge_only:
        run_shards(args.config, args.out)
    shard_dirs = args.shards or sorted((args.out / "shards").glob("seed*[0-9]"))
    merge(args.config, args.out, [d for d in shard_dirs if d.is_dir()])
    compare(str(args.config), str(args.out))


if __name__ == "__main__":
    main()
