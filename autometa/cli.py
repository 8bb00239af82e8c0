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

    from autometa.errors import ConfigError
    from autometa.experiment import run_experiment

    if args.resume and not args.out:
        raise ConfigError("--resume continues the run in --out; pass --out DIR (the directory of that run).")
    if args.config is None and not args.resume:
        raise ConfigError("autometa run needs a config, e.g. autometa run experiments/sinusoid_maml_k10.yaml "
                          "(only --resume may leave it out: the run's own config.yaml is used).")
    out = args.out or _default_out(args.config, "run")
    results = run_experiment(args.config, out, resume=args.resume, overrides=args.set, overwrite=args.overwrite)
    print(json.dumps(results["test"], indent=2))
    print(f"results written to {out}")
    return 0


def _cmd_evaluate(args) -> int:
    import json

    from autometa.errors import ResultsDirError
    from autometa.experiment import evaluate_run

    if args.out:  # refused before the evaluation runs
        target = Path(args.out)
        if target.is_dir():
            raise ResultsDirError(f"--out {args.out!r} is a directory; pass the path of a JSON file to write.")
        if target.exists() and not args.overwrite:
            raise ResultsDirError(f"--out {args.out!r} already exists. Pass --overwrite to replace it, or choose "
                                  f"another file.")
    results = evaluate_run(args.run_dir, args.set, args.checkpoint, args.split)
    print(json.dumps(results, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    return 0


def _cmd_compare(args) -> int:
    from autometa.compare import compare

    compare(args.config, args.out or _default_out(args.config, "compare"), progress=not args.quiet,
            workers=args.workers, overwrite=args.overwrite, quiet=args.quiet)
    return 0


def _cmd_report(args) -> int:
    import json

    from autometa.compare import print_table, render_report
    from autometa.compare._studies import study_of_dir

    path = render_report(args.dir)
    if study_of_dir(args.dir) is not None:  # a study's folder: its summary table
        print((Path(args.dir) / "summary.md").read_text())
    else:
        print_table(json.loads((Path(args.dir) / "report.json").read_text()))
    print(f"report: {path}")
    return 0


PLUGIN_HELP = ("import this Python file first, e.g. one that registers your own filler "
               "(examples/clipped_sgd.py; repeatable)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="autometa", description=__doc__)
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command")

    run = sub.add_parser("run", help="meta-train and test the learner of a config")
    run.add_argument("config", nargs="?", help="YAML config, e.g. experiments/sinusoid_maml_k10.yaml "
                                               "(with --resume: optional, the run's own config.yaml is used)")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config value, e.g. --set learner.inner_lr=0.1 (repeatable)")
    run.add_argument("--out", help="results directory (default runs/<config>-<time>)")
    run.add_argument("--resume", action="store_true",
                     help="continue the run in --out from its last checkpoint, with its own saved config; --set may "
                          "change only outer.steps and run.* budgets, threads, progress, checkpoint_every")
    run.add_argument("--overwrite", action="store_true", help="delete the run already in --out first")
    run.add_argument("--plugin", action="append", default=[], metavar="PATH", help=PLUGIN_HELP)
    run.set_defaults(func=_cmd_run)

    ev = sub.add_parser("evaluate", help="test a finished run's checkpoint, e.g. on 20-way tasks")
    ev.add_argument("run_dir", help="a directory written by autometa run")
    ev.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override the run's config, e.g. --set tasks.ways=20 (repeatable)")
    ev.add_argument("--checkpoint", default="best.pt", help="file in RUN_DIR/checkpoints (default best.pt)")
    ev.add_argument("--split", default="test", choices=["test", "val"], help="which tasks (default test)")
    ev.add_argument("--out", help="also write the results to this JSON file (never overwritten silently)")
    ev.add_argument("--overwrite", action="store_true", help="replace the file --out if it exists")
    ev.set_defaults(func=_cmd_evaluate)

    comp = sub.add_parser("compare", help="hand-crafted vs learned fillers on identical tasks; "
                                          "no config: the quickstart")
    comp.add_argument("config", nargs="?", help="comparison YAML (default: the built-in offline quickstart)")
    comp.add_argument("--out", help="results directory (default runs/<config>-<time>); runs finished there with "
                                    "the same resolved config are reused, changed ones recomputed")
    comp.add_argument("--workers", type=int, help="worker processes, one thread each (default: every CPU core); "
                                                  "the numbers do not depend on it")
    comp.add_argument("--overwrite", action="store_true", help="delete what --out holds first")
    comp.add_argument("--quiet", action="store_true", help="no progress bars or tables; prints the report's path")
    comp.add_argument("--plugin", action="append", default=[], metavar="PATH", help=PLUGIN_HELP)
    comp.set_defaults(func=_cmd_compare)

    report = sub.add_parser("report", help="re-render report.md and the plots of a comparison or study directory")
    report.add_argument("dir", help="a directory written by autometa compare (a comparison or a study)")
    report.set_defaults(func=_cmd_report)

    from autometa.search._cli import add_sweep_parser, run_sweep

    add_sweep_parser(sub).set_defaults(func=run_sweep)

    from autometa.data._acquire import add_data_parser, run_data

    add_data_parser(sub).set_defaults(func=run_data)
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
        from autometa._plugins import load_plugin

        for path in getattr(args, "plugin", None) or []:
            load_plugin(path)
        return args.func(args)
    except AutometaError as exc:
        print(f"autometa: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("autometa: interrupted; completed checkpoints are kept (use --resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
