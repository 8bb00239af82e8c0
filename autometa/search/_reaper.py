"""Ends the processes of a local Ray instance when the process that started it ends, however it ends.

Run as a script (``python _reaper.py TOKEN DRIVER_PID``), in a session of its own, by
:func:`autometa.search._ray.start_local_ray`; it imports nothing from autometa, torch or Ray.
It blocks on its standard input, a pipe whose only writer is the driver: the pipe reaches
end-of-file when the driver closes it after ``ray.shutdown()`` or when the driver dies (even
by ``kill -9``, which runs no handler). It then ends every process of this user whose
environment holds ``AUTOMETA_RAY_OWNER=TOKEN`` - the GCS server, raylet, dashboard and
runtime-env agents and workers started by that ``ray.init``, which inherit the variable -
with SIGTERM, then SIGKILL after a grace period.
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


def reap(token: str, exclude: set[int], grace_s: float = GRACE_S) -> list[int]:
    """SIGTERM, then SIGKILL, every process owned by ``token``; return the PIDs that were found."""
    seen: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = owned_processes(token, exclude)
        seen += [p for p in pids if p not in seen]
        for pid in pids:
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        deadline = time.monotonic() + (grace_s if sig == signal.SIGTERM else 1.0)
        while owned_processes(token, exclude) and time.monotonic() < deadline:
            time.sleep(0.1)
    return seen


def main() -> None:
    token, driver = sys.argv[1], int(sys.argv[2])
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C meant for the driver must not stop the cleanup
    try:
        while sys.stdin.buffer.read(4096):
            pass
    except OSError:
        pass
    reap(token, {os.getpid(), driver})


if __name__ == "__main__":
    main()
