"""What one worker process of a comparison does: one run (a filler and a seed) or one tuning.

Each job runs in a fresh process forked from a server that has imported torch with
``OMP_WAIT_POLICY=PASSIVE`` (no spinning on shared cores) and glibc's malloc told to keep freed
memory (no page zeroing for every large activation). The job uses one intra-op thread, so that
``workers`` processes use ``workers`` cores, and it measures itself: the CPU seconds and the
peak resident memory of its own process (``resource.getrusage``), which depend neither on the
load of the machine nor on which job ran before.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import time
from pathlib import Path

import torch

from autometa.experiment import run_experiment


def _preload() -> None:
    """Import in the fork server what every run imports, so that no job pays for it again.

    Creating a ``torch.optim`` optimizer first imports ``torch._dynamo``: 2 CPU seconds per process.
    """
    import importlib

    for name in ("torch._dynamo", "scipy.stats", "tqdm.auto", "torch.utils.flop_counter", "sklearn.datasets",
                 "autometa.learners", "autometa.tasks", "autometa.nets", "autometa.optimizers"):
        try:
            importlib.import_module(name)
        except ImportError:  # an optional dependency; the job imports what it needs
            pass


_preload()


def die_with(pid: int, interval_s: float = 1.0) -> None:
    """End this worker when process ``pid`` (the comparison that started it) ends, also by ``kill -9``.

    The pool's initializer: a daemon thread checks once a second. (The fork server that forks the
    workers cannot do it: every worker holds its end of the fork server's liveness pipe, so the fork
    server outlives a killed comparison as long as a job runs.)
    """
    import threading

    def watch() -> None:
        while True:
            time.sleep(interval_s)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                os._exit(1)
            except PermissionError:  # pid is alive (reused by another user's process is not expected)
                pass

    threading.Thread(target=watch, name="autometa-die-with-parent", daemon=True).start()


def _usage(wall_start: float) -> dict:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"cpu_s": round(usage.ru_utime + usage.ru_stime, 3), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
            "wall_s": round(time.perf_counter() - wall_start, 3), "pid": os.getpid(),
            "data_dir": os.environ.get("AUTOMETA_DATA")}


def run_job(job: dict, plugins: list[str] = ()) -> dict:
    """Run one job (``job["kind"]`` is ``"run"`` or ``"tune"``) and return its results and costs.

    ``plugins``: Python files the parent imported (``--plugin``), imported here first.
    """
    from autometa._plugins import load_plugin

    for path in plugins:
        load_plugin(path)
    wall_start = time.perf_counter()
    # the fork server was started once, perhaps with another environment (multiprocessing sets the cwd)
    os.environ.clear()
    os.environ.update(job["env"])
    torch.set_num_threads(1)
    start_rss_mb = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    out = Path(job["dir"])
    if out.exists():  # a stale or interrupted job starts again cleanly
        shutil.rmtree(out)
    if job["kind"] == "run":
        results = run_experiment(job["config"], out)
        results["config_digest"] = job["digest"]
        results["process"] = {**_usage(wall_start), "start_rss_mb": start_rss_mb}
        (out / "results.json").write_text(json.dumps(results, indent=2))
        return results
    return _tune(job, out, wall_start, start_rss_mb)


def _tune(job: dict, out: Path, wall_start: float, start_rss_mb: float) -> dict:
    from autometa.search import search
    from autometa.search._optuna import quiet_logging

    quiet_logging()  # a line per trial would break the progress bar
    result = search(job["config"], job["space"], backend="optuna", n_trials=job["trials"], seed=0, out_dir=out,
                    metric=job.get("metric"))
    tuned = {"params": dict(result.best_params), "value": result.best_value, "trials": len(result.trials),
             "config_digest": job["digest"], "process": {**_usage(wall_start), "start_rss_mb": start_rss_mb}}
    (out / "tuned.json").write_text(json.dumps(tuned, indent=2))
    return tuned
