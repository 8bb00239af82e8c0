"""Ends the processes of a local Ray instance when the process that started it ends, however it ends.

Run as a script (``python _reaper.py TOKEN DRIVER_PID``), in a session of its own, by
:func:`autometa.search._ray.start_local_ray`; it imports nothing from autometa, torch or Ray.
It waits on its standard input, a pipe whose only writer is the driver: the pipe reaches
end-of-file when the driver closes it after ``ray.shutdown()`` or when the driver dies (even
by ``kill -9``, which runs no handler). Meanwhile, twice a second, it records the processes
of this user whose environment holds ``AUTOMETA_RAY_OWNER=TOKEN`` (the GCS server, raylet,
monitors and workers started by that ``ray.init`` inherit the variable) and their descendants
(the dashboard and runtime-env agents, whose environment Ray's process titles overwrite, are
children of the raylet). At end-of-file it ends them all - SIGTERM, then SIGKILL after a grace
period - checking each PID's start time, so that a reused PID is never hit.
"""

from __future__ import annotations

import os
import signal
import sys
import time

GRACE_S = 3.0


def owned_processes(token: str, exclude: set[int]) -> list[int]:
    """PIDs of this user's processes whose initial environment holds ``AUTOMETA_RAY_OWNER=token``."""
    needle = f"AUTOMETA_RAY_OWNER={token}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in exclude:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as handle:
                if needle in handle.read().split(b"\0"):
                    found.append(int(entry))
        except OSError:  # gone, or another user's
            continue
    return found


def _stat(pid: int) -> tuple[int, int] | None:
    """``(parent pid, start time)`` of a process, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
        return int(fields[1]), int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def family(token: str, exclude: set[int]) -> dict[int, int]:
    """``{pid: start time}`` of the processes owned by ``token`` and all their descendants."""
    stats = {int(e): _stat(int(e)) for e in os.listdir("/proc") if e.isdigit()}
    children: dict[int, list[int]] = {}
    for pid, stat in stats.items():
        if stat is not None:
            children.setdefault(stat[0], []).append(pid)
    found, todo = {}, list(owned_processes(token, exclude))
    while todo:
        pid = todo.pop()
        if pid in found or pid in exclude or stats.get(pid) is None:
            continue
        found[pid] = stats[pid][1]
        todo += children.get(pid, [])
    return found


def _alive(tracked: dict[int, int]) -> dict[int, int]:
    return {pid: start for pid, start in tracked.items() if (_stat(pid) or (0, None))[1] == start}


def reap(token: str, exclude: set[int], tracked: dict[int, int] | None = None, grace_s: float = GRACE_S) -> list[int]:
    """SIGTERM, then SIGKILL, the processes owned by ``token``, their descendants and ``tracked``.

    Returns the PIDs that were signalled.
    """
    targets = _alive({**(tracked or {}), **family(token, exclude)})
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in _alive(targets):
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        deadline = time.monotonic() + (grace_s if sig == signal.SIGTERM else 1.0)
        while _alive(targets) and time.monotonic() < deadline:
            time.sleep(0.1)
        targets.update(_alive(family(token, exclude)))  # anything started meanwhile
    return sorted(targets)


def main() -> None:
    import select

    token, driver = sys.argv[1], int(sys.argv[2])
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C meant for the driver must not stop the cleanup
    exclude = {os.getpid(), driver}
    tracked: dict[int, int] = {}
    stdin = sys.stdin.buffer.raw
    while True:
        ready, _, _ = select.select([stdin], [], [], 0.5)
        if ready:
            try:
                if not stdin.read(4096):
                    break
            except OSError:
                break
        tracked = {**_alive(tracked), **family(token, exclude)}
    reap(token, exclude, tracked)


if __name__ == "__main__":
    main()
