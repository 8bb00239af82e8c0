"""Killing a sweep process mid-trial and re-running it loses and repeats no finished trial."""

import os
import signal
import subprocess
import sys
import time

import pytest

import autometa.search

KILL_SCRIPT = """
import sys, time
import autometa.search

out, backend, log = sys.argv[1], sys.argv[2], sys.argv[3]

def objective(trial):
    with open(log, "a") as f:
        f.write(f"start {trial.number} {trial.params['x']!r}\\n")
    time.sleep(0.4)
    with open(log, "a") as f:
        f.write(f"end {trial.number} {trial.params['x']!r}\\n")
    return trial.params["x"] ** 2

autometa.search(objective, {"x": {"float": [-1.0, 1.0]}}, backend=backend, n_trials=8, seed=0,
                out_dir=out, resume=True, sampler="random")
"""


@pytest.mark.parametrize("backend", ["optuna", "nni"])
def test_killed_sweep_resumes_without_losing_or_repeating_a_finished_trial(tmp_path, backend):
    script = tmp_path / "sweep.py"
    script.write_text(KILL_SCRIPT)
    log = tmp_path / "calls.log"
    out = tmp_path / "out"
    args = [sys.executable, str(script), str(out), backend, str(log)]
    process = subprocess.Popen(args, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    deadline = time.time() + 60
    while time.time() < deadline:  # kill during a trial, after at least three finished
        lines = log.read_text().splitlines() if log.exists() else []
        if sum(ln.startswith("end") for ln in lines) >= 3 and lines[-1].startswith("start"):
            break
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    before = log.read_text().splitlines()
    interrupted = before[-1].split()
    assert interrupted[0] == "start"
    subprocess.run(args, check=True, timeout=120, env={**os.environ, "PYTHONWARNINGS": "ignore"})

    ends = [ln.split() for ln in log.read_text().splitlines() if ln.startswith("end")]
    assert len(ends) == 8 and len({e[1] for e in ends}) == 8  # every finished trial ran once
    result = (autometa.search(lambda t: 0.0, {"x": {"float": [-1.0, 1.0]}}, backend=backend, n_trials=8,
                              out_dir=out, resume=True))
    complete = [t for t in result.trials if t.state == "complete"]
    assert len(complete) == 8 and sorted(t.number for t in complete) == sorted(int(e[1]) for e in ends)
    failed = [t for t in result.trials if t.state == "failed"]
    assert len(failed) == 1 and failed[0].number == int(interrupted[1]) and "interrupted" in failed[0].error
    rerun = [e for e in ends if e[2] == interrupted[2]]
    assert len(rerun) == 1 and int(rerun[0][1]) != int(interrupted[1])  # same parameters, new trial


@pytest.mark.slow
def test_killed_ray_sweep_restores_and_finishes_each_trial_once(tmp_path):
    """Ray restores the experiment: finished trials stay, the interrupted one runs again under its number.

    The trial running at the kill may still finish in its worker process after the driver died
    (its result never reaches the experiment state), so only that trial may appear twice.
    """
    pytest.importorskip("ray.tune")
    script = tmp_path / "sweep.py"
    script.write_text(KILL_SCRIPT.replace('sampler="random")', 'sampler="random", num_cpus=1)'))
    log = tmp_path / "calls.log"
    out = tmp_path / "out"
    args = [sys.executable, str(script), str(out), "ray", str(log)]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    process = subprocess.Popen(args, env=env, start_new_session=True)
    deadline = time.time() + 240
    running = None
    while time.time() < deadline:
        lines = log.read_text().splitlines() if log.exists() else []
        if sum(ln.startswith("end") for ln in lines) >= 3 and lines[-1].startswith("start"):
            running = lines[-1].split()[1]
            break
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # the driver and the Ray processes it started
    process.wait()
    subprocess.run(args, check=True, timeout=300, env=env)
    ends = [ln.split()[1] for ln in log.read_text().splitlines() if ln.startswith("end")]
    assert sorted(set(ends)) == [str(n) for n in range(8)], log.read_text()
    assert all(ends.count(n) == 1 for n in set(ends) - {running}), log.read_text()
