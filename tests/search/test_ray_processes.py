"""A local Ray started by `autometa sweep` listens on loopback only, and none of its processes outlive a
`kill -9` of the driver; `--address` of a cluster that does not answer fails within the timeout."""

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from autometa.errors import ClusterUnreachableError
from autometa.search._cli import add_sweep_parser
from autometa.search._reaper import _alive, family

pytest.importorskip("ray.tune")

SLOW_TRIALS = {
    "seed": 0,
    "tasks": {"name": "sinusoid", "shots": 5, "queries": 5},
    "model": {"name": "mlp", "hidden": [16, 16]},
    "learner": {"name": "maml", "inner_lr": 0.01, "inner_steps": 1},
    "outer": {"optimizer": "adam", "lr": 0.001, "meta_batch": 2, "steps": 40},
    "run": {"validate_every": 10, "val_tasks": 8, "test_tasks": 8, "eval_batch": 8, "checkpoint_every": 0,
            "log_every": 10, "threads": 1, "progress": False},
}
SPACE = {"learner.inner_lr": {"float": [1e-3, 0.05], "log": True}}


def write_inputs(folder: Path) -> tuple[Path, Path]:
    (folder / "c.yaml").write_text(yaml.safe_dump(SLOW_TRIALS))
    (folder / "s.yaml").write_text(yaml.safe_dump(SPACE))
    return folder / "c.yaml", folder / "s.yaml"


def sweep_command(config, space, out, trials, *extra) -> list[str]:
    return [sys.executable, "-m", "autometa.cli", "sweep", str(config), "--space", str(space), "--backend", "ray",
            "--trials", str(trials), "--num-cpus", "2", "--out", str(out), *extra]


def owner_tokens() -> set[str]:
    tokens = set()
    for entry in os.listdir("/proc"):
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        tokens |= {v.split(b"=", 1)[1].decode() for v in environ if v.startswith(b"AUTOMETA_RAY_OWNER=")}
    return tokens


def listeners(pids) -> list[str]:
    """Local addresses of the TCP sockets in LISTEN state that ``pids`` hold (from /proc/net/tcp and tcp6)."""
    inodes = set()
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                found.append(_address(fields[1].split(":")[0]))
    return found


def _address(hexed: str) -> str:
    raw = bytes.fromhex(hexed)
    words = [raw[i:i + 4][::-1] for i in range(0, len(raw), 4)]  # /proc prints each 32-bit word little-endian
    data = b"".join(words)
    if len(data) == 4:
        return ".".join(str(b) for b in data)
    if data[:12] == b"\0" * 10 + b"\xff\xff":
        return "::ffff:" + ".".join(str(b) for b in data[12:])
    return ":".join(data[i:i + 2].hex() for i in range(0, 16, 2))


def is_loopback(address: str) -> bool:
    return address.startswith("127.") or address.startswith("::ffff:127.") or address == "0000:" * 7 + "0001"


def test_address_parser_reads_proc_net_tcp_formats():
    assert _address("0100007F") == "127.0.0.1" and is_loopback("127.0.0.1")
    assert _address("00000000") == "0.0.0.0" and not is_loopback("0.0.0.0")
    assert _address("0000000000000000FFFF00000100007F") == "::ffff:127.0.0.1"
    assert not is_loopback(_address("00000000000000000000000000000000"))  # [::], every interface


def test_local_ray_listens_on_loopback_only_and_dies_with_a_killed_driver(tmp_path):
    config, space = write_inputs(tmp_path)
    before = owner_tokens()
    driver = subprocess.Popen(sweep_command(config, space, tmp_path / "out", 6), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    journal = tmp_path / "out" / "ray_trials.jsonl"
    processes, addresses, deadline = {}, [], time.time() + 240
    try:
        while time.time() < deadline and driver.poll() is None:
            new = owner_tokens() - before
            if new and journal.exists() and '"start"' in journal.read_text():  # trials are running
                for token in new:
                    processes.update(family(token, {driver.pid}))
                addresses = listeners(list(processes) + [driver.pid])
                if len(processes) >= 4:
                    break
            time.sleep(0.5)
        assert driver.poll() is None, "the sweep ended before it could be killed"
        names = {Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
                 for p in _alive(processes)}
    finally:
        driver.send_signal(signal.SIGKILL)  # the driver only: its Ray processes are not in its process group
        driver.wait()
    assert any("raylet" in n for n in names) and any("gcs_server" in n for n in names), names
    assert addresses and all(is_loopback(a) for a in addresses), addresses
    deadline = time.time() + 30
    while _alive(processes) and time.time() < deadline:
        time.sleep(0.5)
    left = {p: Path(f"/proc/{p}/cmdline").read_bytes()[:60] for p in _alive(processes)}
    assert not left, f"processes of the killed sweep's Ray are still running: {left}"


def test_an_address_where_nothing_answers_fails_within_the_timeout(tmp_path):
    config, space = write_inputs(tmp_path)
    parser = argparse.ArgumentParser()
    add_sweep_parser(parser.add_subparsers())
    args = parser.parse_args(sweep_command(config, space, tmp_path / "out", 2, "--address", "127.0.0.1:1",
                                           "--connect-timeout", "5")[3:])
    with pytest.raises(ClusterUnreachableError, match="No Ray cluster answered at 127.0.0.1:1 within 5 s"):
        args.func(args)


def test_an_address_is_not_ignored_when_this_process_already_runs_a_ray(local_ray):
    import autometa.search
    from autometa.errors import ConfigError

    with pytest.raises(ClusterUnreachableError, match="127.0.0.1:1"):
        autometa.search(lambda t: 0.0, SPACE, backend="ray", n_trials=1, address="127.0.0.1:1", connect_timeout=5)
    gcs = local_ray.get_runtime_context().gcs_address
    other = f"127.0.0.1:{int(gcs.rsplit(':', 1)[1]) + 1}"
    try:
        autometa.search(lambda t: 0.0, SPACE, backend="ray", n_trials=1, address=other, connect_timeout=5)
    except (ClusterUnreachableError, ConfigError) as exc:
        assert other in str(exc)
    else:
        raise AssertionError("a search with another cluster's address ran on this process's Ray")
