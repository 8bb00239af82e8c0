"""Search backends: start-up time, per-trial overhead on a no-op objective, and a small real sweep.

Measures, in one run on this machine:

1. start-up: importing each backend's library in a fresh interpreter (minus a bare
   interpreter's start), and for Ray also ``ray.init`` of a local 2-CPU instance;
2. overhead of ``autometa.search`` on a no-op objective (returns 0.0): the fixed cost (a small
   search) and the marginal cost per trial (slope between a small and a large search) for
   Optuna in memory and with SQLite, NNI in-process, and Ray Tune (local, already started; one
   trial at a time, and TPE two at once); ratios are to Optuna in memory, from the same run;
3. the same small real sweep from the CLI on all three backends: 16 trials of MAML on
   sinusoid regression (experiments/sinusoid_maml_k10.yaml with few meta-steps), TPE seed 0,
   one trial at a time, each in a fresh process; checks that the results have the same format.

Usage::

    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/search_overhead.py [--quick]

Writes benchmarks/search_overhead.json and benchmarks/search_overhead.md (its section of RESULTS.md); prints tables.
Never asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPACE = {"x": {"float": [-1.0, 1.0]}, "n": {"int": [0, 3]}}
SWEEP_SETS = ["outer.steps=100", "outer.meta_batch=10", "run.validate_every=25", "run.val_tasks=100",
              "run.test_tasks=200", "run.eval_batch=100", "run.checkpoint_every=0", "run.log_every=25",
              "run.threads=1"]
CLI = ("import argparse, sys\n"
       "from autometa.search._cli import add_sweep_parser\n"
       "parser = argparse.ArgumentParser(prog='autometa')\n"
       "add_sweep_parser(parser.add_subparsers(dest='command'))\n"
       "args = parser.parse_args(sys.argv[1:])\n"
       "sys.exit(args.func(args))\n")


def noop(trial):
    return 0.0


def import_times(repeats: int) -> dict:
    """Median seconds to import each library in a fresh interpreter, minus a bare interpreter."""
    def once(code: str) -> float:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
        return time.perf_counter() - start

    out = {}
    codes = {"bare": "pass", "autometa.search": "import autometa.search", "optuna": "import optuna",
             "ray.tune": "import ray.tune", "nni (tuners)": "import nni.algorithms.hpo.tpe_tuner"}
    samples = {name: [] for name in codes}
    for _ in range(repeats):  # alternate so that machine load hits every library alike
        for name, code in codes.items():
            samples[name].append(once(code))
    bare = statistics.median(samples.pop("bare"))
    for name, values in samples.items():
        out[name] = round(statistics.median(values) - bare, 3)
    out["bare interpreter"] = round(bare, 3)
    return out


def per_trial(sizes: tuple[int, int], ray_sizes: tuple[int, int], repeats: int, ray_repeats: int):
    """Fixed cost (a search of the small size) and marginal cost per trial (slope between two sizes)."""
    import autometa.search as search_api

    def timed(n_trials: int, **kwargs) -> float:
        start = time.perf_counter()
        result = search_api.search(noop, SPACE, seed=0, n_trials=n_trials, **kwargs)
        elapsed = time.perf_counter() - start
        assert len(result.completed) == n_trials
        return elapsed

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    samples: dict = {}

    def measure(name: str, n_sizes, **kwargs) -> None:
        for n in n_sizes:
            if kwargs.get("out_dir") is True:
                with tempfile.TemporaryDirectory() as folder:
                    seconds = timed(n, **{**kwargs, "out_dir": folder})
            else:
                seconds = timed(n, **kwargs)
            samples.setdefault((name, n), []).append(seconds)

    runs = {
        "optuna (memory, tpe)": dict(backend="optuna"),
        "optuna (memory, random)": dict(backend="optuna", sampler="random"),
        "optuna (sqlite, tpe)": dict(backend="optuna", out_dir=True),
        "nni (tpe)": dict(backend="nni"),
        "nni (random)": dict(backend="nni", sampler="random"),
    }
    for _ in range(repeats):  # alternate backends so that load changes hit all of them
        for name, kwargs in runs.items():
            measure(name, sizes, **kwargs)

    import ray

    start = time.perf_counter()
    ray.init(num_cpus=2, object_store_memory=128 * 1024 * 1024, include_dashboard=False, log_to_driver=False)
    ray_init = time.perf_counter() - start
    ray_runs = {"ray (random, 1 trial at a time)": dict(backend="ray", sampler="random", max_concurrent=1),
                "ray (tpe via OptunaSearch, 2 at once)": dict(backend="ray", sampler="tpe", max_concurrent=2)}
    try:
        for _ in range(ray_repeats):
            for name, kwargs in ray_runs.items():
                measure(name, ray_sizes, **kwargs)
    finally:
        ray.shutdown()
    rows = {}
    for name in [*runs, *ray_runs]:
        small, big = sizes if name in runs else ray_sizes
        t_small = statistics.median(samples[(name, small)])
        t_big = statistics.median(samples[(name, big)])
        rows[name] = {"sizes": [small, big], "fixed_s": round(t_small, 3),
                      "marginal_ms": round(1000 * (t_big - t_small) / (big - small), 2),
                      "mean_ms_at_big": round(1000 * t_big / big, 2)}
    return rows, ray_init


def real_sweep(out_root: Path, trials: int) -> dict:
    config = ROOT / "experiments" / "sinusoid_maml_k10.yaml"
    space = ROOT / "autometa" / "search_spaces" / "maml_sinusoid.yaml"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    out = {}
    for backend in ("optuna", "nni", "ray"):
        folder = out_root / backend
        argv = [sys.executable, "-c", CLI, "sweep", str(config), "--space", str(space), "--backend", backend,
                "--trials", str(trials), "--seed", "0", "--out", str(folder)]
        for item in SWEEP_SETS:
            argv += ["--set", item]
        if backend == "ray":
            argv += ["--num-cpus", "2", "--max-concurrent", "1"]
        start = time.perf_counter()
        run = subprocess.run(argv, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if run.returncode != 0:
            raise RuntimeError(f"{backend} sweep failed:\n{run.stderr[-3000:]}")
        sweep = json.loads((folder / "sweep.json").read_text())
        trial_time = sum(t["duration_s"] or 0.0 for t in sweep["trials"])
        out[backend] = {"wall_s": round(wall, 1), "sum_of_trial_durations_s": round(trial_time, 1),
                        "counts": sweep["counts"], "best": sweep.get("best"),
                        "keys": sorted(sweep), "trial_keys": sorted(sweep["trials"][0]),
                        "csv_header": (folder / "trials.csv").read_text().splitlines()[0],
                        "files": sorted(p.name for p in folder.iterdir())}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer trials and repeats (a smoke run)")
    parser.add_argument("--skip-sweep", action="store_true", help="only start-up and per-trial overhead")
    args = parser.parse_args()
    if args.quick:
        sizes, ray_sizes, repeats, ray_repeats, sweep_trials = (5, 20), (2, 4), 1, 1, 4
    else:
        sizes, ray_sizes, repeats, ray_repeats, sweep_trials = (20, 200), (4, 32), 3, 3, 16

    report: dict = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
                    "python": platform.python_version(), "load_before": os.getloadavg()}
    import nni
    import optuna
    import ray

    report["versions"] = {"optuna": optuna.__version__, "ray": ray.__version__, "nni": nni.__version__}
    report["import_s"] = import_times(3 if not args.quick else 1)
    overhead, ray_init = per_trial(sizes, ray_sizes, repeats, ray_repeats)
    report["ray_init_s"] = round(ray_init, 2)
    base = overhead["optuna (memory, tpe)"]["marginal_ms"]
    for row in overhead.values():
        row["marginal_ratio_to_optuna_memory_tpe"] = round(row["marginal_ms"] / base, 2)
    report["per_trial"] = overhead
    report["repeats"] = {"in_process": repeats, "ray": ray_repeats}
    if not args.skip_sweep:
        with tempfile.TemporaryDirectory() as folder:
            report["real_sweep"] = real_sweep(Path(folder), sweep_trials)
        report["real_sweep_settings"] = {"config": "experiments/sinusoid_maml_k10.yaml", "sets": SWEEP_SETS,
                                         "space": "maml_sinusoid", "trials": sweep_trials,
                                         "sampler": "tpe", "seed": 0}
    report["load_after"] = os.getloadavg()

    (ROOT / "benchmarks" / "search_overhead.json").write_text(json.dumps(report, indent=2))
    text = render(report)
    print(text)
    if not args.quick:
        (ROOT / "benchmarks" / "search_overhead.md").write_text(text)


def render(report: dict) -> str:
    lines = ["## Search backends: start-up, per-trial overhead, a small real sweep", "",
             f"Machine: {report['machine']}, Python {report['python']}; optuna {report['versions']['optuna']}, "
             f"ray {report['versions']['ray']}, nni {report['versions']['nni']}. Load average before/after: "
             f"{', '.join(f'{x:.1f}' for x in report['load_before'])} / "
             f"{', '.join(f'{x:.1f}' for x in report['load_after'])} (the 2 cores are shared with other jobs; "
             f"treat absolute times as rough, ratios as the result). Command: "
             f"`OMP_NUM_THREADS=1 nice -n 5 python benchmarks/search_overhead.py`.", "",
             "Start-up (median of fresh interpreters, minus a bare interpreter "
             f"{report['import_s']['bare interpreter']} s):", "", "| what | seconds |", "| --- | --- |"]
    for name, value in report["import_s"].items():
        if name != "bare interpreter":
            lines.append(f"| import {name} | {value} |")
    lines += [f"| ray.init(num_cpus=2), local | {report['ray_init_s']} |", "",
              "Overhead of `autometa.search` on a no-op objective: fixed = wall time of a search of the "
              "small size; marginal = extra wall time per trial between the small and the large size "
              f"(medians of {report['repeats']['in_process']} runs in-process, {report['repeats']['ray']} on Ray; "
              "Ray already started; a marginal cost below zero means it is smaller than the run-to-run noise):",
              "",
              "| backend | sizes | fixed s | marginal ms / trial | marginal ratio to optuna (memory, tpe) |",
              "| --- | --- | --- | --- | --- |"]
    for name, row in report["per_trial"].items():
        lines.append(f"| {name} | {row['sizes'][0]} / {row['sizes'][1]} | {row['fixed_s']} | {row['marginal_ms']} | "
                     f"{row['marginal_ratio_to_optuna_memory_tpe']} |")
    if "real_sweep" in report:
        s = report["real_sweep_settings"]
        lines += ["", f"Small real sweep from the CLI: {s['trials']} trials of MAML on sinusoid regression "
                      f"(`{s['config']}` with `{' '.join('--set ' + x for x in s['sets'])}`), space "
                      f"`{s['space']}`, sampler {s['sampler']}, seed {s['seed']}, one trial at a time, "
                      f"each sweep in a fresh process (wall includes imports and, for Ray, starting it):", "",
                  "| backend | wall s | sum of trial durations s | complete / pruned / failed | best val_loss |",
                  "| --- | --- | --- | --- | --- |"]
        for backend, row in report["real_sweep"].items():
            c = row["counts"]
            best = f"{row['best']['value']:.3f}" if row.get("best") else "-"
            lines.append(f"| {backend} | {row['wall_s']} | {row['sum_of_trial_durations_s']} | "
                         f"{c['complete']} / {c['pruned']} / {c['failed']} | {best} |")
        same = len({(json.dumps(r["keys"]), json.dumps(r["trial_keys"]), r["csv_header"])
                    for r in report["real_sweep"].values()}) == 1
        lines += ["", f"Same results format on all three backends (sweep.json keys, trial keys, trials.csv "
                      f"header): {'yes' if same else 'NO'}; files: {report['real_sweep']['optuna']['files']}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
