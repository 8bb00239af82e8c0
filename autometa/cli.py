"""The ``autometa`` command: run, compare, report, sweep, data."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from autometa.errors import AutometaError


def _default_out(config: str | None, kind: str) -> str:
    stem = Path(config).stem if config else kind
    return str(Path("runs") / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}")


def _cmd_run(args) -> int:
    import json

    from autometa.experiment import run_experiment

    out = args.out or _default_out(args.config, "run")
    results = run_experiment(args.config, out, resume=args.resume, overrides=args.set)
    print(json.dumps(results["test"], indent=2))
    print(f"results written to {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="autometa", description=__doc__)
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command")

    run = sub.add_parser("run", help="meta-train and test the learner of a config")
    run.add_argument("config", help="YAML config, e.g. experiments/sinusoid_maml_k10.yaml")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config value, e.g. --set learner.inner_lr=0.1 (repeatable)")
    run.add_argument("--out", help="results directory (default runs/<config>-<time>)")
    run.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    run.set_defaults(func=_cmd_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        import autometa

        print(autometa.__version__)
        return 0
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except AutometaError as exc:
        print(f"autometa: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("autometa: interrupted; completed checkpoints are kept (use --resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
