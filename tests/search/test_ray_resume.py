"""`autometa sweep --backend ray` killed twice (kill -9, at a trial's end) and resumed, with Tune's saved state
damaged in between, ends with exactly the requested trials: none lost, none run twice once finished."""

import json
import os
import signal
import subprocess
import time

import pytest

from tests.search.test_ray_processes import sweep_command, write_inputs

pytest.importorskip("ray.tune")

TRIALS = 5


def ends(journal) -> list[int]:
    if not journal.exists():
        return []
    out = []
    for line in journal.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("event") == "end":
            out.append(entry["record"]["number"])
    return out


def kill_after(command, journal, finished: int) -> None:
    """Start the sweep and kill -9 its driver once ``finished`` trials in all have ended (or it exits)."""
    driver = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and driver.poll() is None and len(ends(journal)) < finished:
        time.sleep(0.2)
    driver.send_signal(signal.SIGKILL)
    driver.wait()


def damage_tune_state(folder) -> list[str]:
    """Zero Ray Tune's searcher-state files and delete its tuner.pkl, as a kill mid-write can leave them."""
    damaged = []
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            if name.startswith("searcher-state") or name.startswith("experiment_state"):
                open(path, "w").close()
                damaged.append(path)
            elif name == "tuner.pkl":
                os.remove(path)
                damaged.append(path)
    return damaged


@pytest.mark.slow  # about 4 minutes on 2 busy cores: three Ray starts
def test_ray_sweep_killed_twice_with_damaged_tune_state_resumes_to_exactly_the_requested_trials(tmp_path):
    config, space = write_inputs(tmp_path)
    out = tmp_path / "out"
    journal = out / "ray_trials.jsonl"
    kill_after(sweep_command(config, space, out, TRIALS), journal, 1)
    first = ends(journal)
    assert damage_tune_state(out / "ray"), "Tune wrote no state to damage"
    kill_after(sweep_command(config, space, out, TRIALS, "--resume"), journal, len(first) + 1)
    second = ends(journal)
    assert len(second) < TRIALS, "the sweep finished before the second kill; make the trials longer"
    done = subprocess.run(sweep_command(config, space, out, TRIALS, "--resume"), capture_output=True, text=True,
                          timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]

    sweep = json.loads((out / "sweep.json").read_text())
    numbers = [t["number"] for t in sweep["trials"]]
    assert numbers == list(range(TRIALS)) and sweep["counts"] == {"complete": TRIALS, "pruned": 0, "failed": 0}
    assert len({t["params"]["learner.inner_lr"] for t in sweep["trials"]}) == TRIALS
    everything = ends(journal)
    assert sorted(everything) == list(range(TRIALS))  # every trial ended once: a finished one never re-ran
    assert set(first) <= set(second) and everything[:len(second)] == second
    for number in range(TRIALS):
        results = json.loads((out / "trials" / f"{number:04d}" / "results.json").read_text())
        trial = sweep["trials"][number]
        assert results["best_val"]["value"] == pytest.approx(trial["values"][0])
    assert f"{TRIALS} trials" in done.stdout
