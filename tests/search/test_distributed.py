"""A sweep across a two-node Ray cluster on this machine, started with ``ray start`` and token auth.

Every process the test starts is ended by id (``ray stop`` would end every Ray of the user), and
the token file lives in a temporary home folder that is removed.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytest.importorskip("ray.tune")

RAY = str(Path(sys.executable).with_name("ray"))

DRIVER = """
import json, sys, time
import autometa.search

MEETING = sys.argv[2]  # captured by value: in a Ray worker sys.argv is the worker's


def objective(trial):
    import pathlib, uuid
    import ray
    # a barrier: the first trial waits until a second one runs. Each node has one CPU and each
    # trial needs one, so two trials running at once are on two nodes, however busy the machine.
    meeting = pathlib.Path(MEETING)
    (meeting / uuid.uuid4().hex).touch()
    deadline = time.time() + 120
    while len(list(meeting.iterdir())) < 2 and time.time() < deadline:
        time.sleep(0.05)
    trial.set_user_attr("node", ray.get_runtime_context().get_node_id())
    return trial.params["x"] ** 2

result = autometa.search(objective, {"x": {"float": [-1.0, 1.0]}}, backend="ray", address=sys.argv[1],
                         n_trials=4, sampler="random", seed=0, resources={"cpu": 1})
print(json.dumps({"states": [t.state for t in result.trials], "numbers": [t.number for t in result.trials],
                  "nodes": [t.user_attrs.get("node") for t in result.trials]}))
"""


def _free_ports(count: int) -> list[int]:
    sockets, ports = [], []
    for _ in range(count):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        sockets.append(s)
        ports.append(s.getsockname()[1])
    for s in sockets:
        s.close()
    return ports


def _processes_of(marker: str) -> list[int]:
    """Ids of this user's processes whose command line holds ``marker``, and their children."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid != os.getuid():
                continue
            if marker in (entry / "cmdline").read_bytes().decode(errors="replace"):
                found.append(int(entry.name))
        except OSError:
            continue
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if parent in found:
                children.append(int(entry.name))
    return sorted(set(found + children))


def _stop_cluster(marker: str) -> None:
    """End exactly the processes of this test's cluster (never `ray stop`, which ends every Ray of the user)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in _processes_of(marker):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + 5
        while time.time() < deadline and _processes_of(marker):
            time.sleep(0.2)


@pytest.mark.distributed
def test_sweep_runs_across_two_nodes_started_with_ray_start_and_a_token():
    workdir = Path(tempfile.mkdtemp(prefix="amray-"))  # short: Ray's socket paths must stay < 108 bytes
    home = workdir / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(HOME=str(home), RAY_AUTH_MODE="token", RAY_USAGE_STATS_ENABLED="0", PYTHONWARNINGS="ignore")
    port, head_manager, head_objects, dash, node_manager, node_objects = _free_ports(6)
    common = ["--num-cpus=1", "--object-store-memory=80000000", "--disable-usage-stats"]
    marker = str(workdir)
    try:
        # Ray 2.60 turns token auth on with RAY_AUTH_MODE=token and wants the token first
        subprocess.run([RAY, "get-auth-token", "--generate"], env=env, check=True, capture_output=True, timeout=60)
        subprocess.run([RAY, "start", "--head", f"--port={port}", "--include-dashboard=false",
                        f"--dashboard-agent-listen-port={dash}", f"--temp-dir={workdir / 'ray'}",
                        f"--node-manager-port={head_manager}", f"--object-manager-port={head_objects}",
                        "--min-worker-port=0", "--max-worker-port=0", *common],
                       env=env, check=True, capture_output=True, timeout=120)
        token = home / ".ray" / "auth_token"
        assert token.is_file()
        address = f"127.0.0.1:{port}"
        subprocess.run([RAY, "start", f"--address={address}", f"--node-manager-port={node_manager}",
                        f"--object-manager-port={node_objects}", "--min-worker-port=0", "--max-worker-port=0",
                        *common], env=env, check=True, capture_output=True, timeout=120)

        meeting = workdir / "meeting"
        meeting.mkdir()
        driver = [sys.executable, "-c", DRIVER, address, str(meeting)]
        run = subprocess.run(driver, env=env, capture_output=True, text=True, timeout=240)
        assert run.returncode == 0, run.stderr[-3000:]
        outcome = json.loads(run.stdout.strip().splitlines()[-1])
        assert outcome["states"] == ["complete"] * 4 and outcome["numbers"] == [0, 1, 2, 3]
        assert len(set(outcome["nodes"])) == 2, "the four trials ran on both nodes"

        stranger = dict(env, HOME=str(workdir / "elsewhere"))  # no token file, no RAY_AUTH_TOKEN
        refused = subprocess.run(driver, env=stranger, capture_output=True, text=True, timeout=120)
        assert refused.returncode != 0 and "refused this driver's authentication token" in refused.stderr
    finally:
        _stop_cluster(marker)
        shutil.rmtree(workdir, ignore_errors=True)
    assert not _processes_of(marker)
