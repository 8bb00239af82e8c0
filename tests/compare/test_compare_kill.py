"""A killed ``autometa compare`` leaves no worker behind (its running jobs end with it)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and PR_SET_PDEATHSIG are Linux's")

LONG = {
    "seeds": [0],
    "comparisons": [{
        "name": "sine", "slot": "initialization", "reference": "random",
        "base": {"tasks": {"name": "sinusoid", "shots": 5, "queries": 5}, "model": {"name": "mlp", "hidden": [8]},
                 "outer": {"meta_batch": 4, "steps": 10 ** 7},
                 "run": {"validate_every": 10 ** 7, "val_tasks": 10, "test_tasks": 24, "checkpoint_every": 0,
                         "log_every": 10 ** 6, "threads": 1, "progress": False}},
        "fillers": {"random": {"kind": "hand-crafted", "learner": {"name": "pretrained"}, "outer": {"steps": 0}},
                    "maml": {"kind": "learned", "learner": {"name": "maml", "inner_lr": 0.01}}},
    }],
}


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_killing_compare_ends_its_running_workers(tmp_path):
    config = tmp_path / "long.json"
    config.write_text(json.dumps(LONG))
    driver = subprocess.Popen([sys.executable, "-c", "import sys, autometa; autometa.compare(sys.argv[1], "
                               "sys.argv[2], progress=False, workers=1)", str(config), str(tmp_path / "out")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ})
    try:
        deadline, workers = time.monotonic() + 240, set()
        while time.monotonic() < deadline and not (tmp_path / "out" / "sine" / "maml").exists():
            time.sleep(0.5)  # the long MAML job has started in a worker (the 0-step one finished first)
        assert (tmp_path / "out" / "sine" / "maml").exists(), "the comparison never started its MAML job"
        workers = _descendants(driver.pid)
        assert workers, "no worker process found"
        driver.send_signal(signal.SIGKILL)
        driver.wait()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(_alive(p) for p in workers):
            time.sleep(0.5)
        left = {p: (Path("/proc") / str(p) / "cmdline").read_bytes().replace(b"\0", b" ")[:120]
                for p in workers if _alive(p)}
        assert not left, f"processes outlived the killed comparison: {left}"
    finally:
        for p in _descendants(driver.pid) | workers:
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass
