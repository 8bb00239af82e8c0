"""Fault injection: `autometa sweep` (Optuna, Ray, NNI) killed with SIGKILL at random moments, then resumed.

For each backend, SWEEPS sweeps of TRIALS trials of a tiny sinusoid config are started from the
CLI; each is killed (kill -9 of the driver only) KILLS times at a random moment (once a random
number of trials have finished, plus a random delay of up to 3 s), then resumed with --resume
until it finishes. Recorded per sweep: the trials finished at each kill, the final trials, trials
lost (finished before a kill but missing or changed afterwards), duplicated (a finished trial
that ran again: same parameters completed twice, or a number that ended twice in Ray's or NNI's
journal), Ray processes still running 30 s after each kill and after the final run, and (Ray)
the local addresses of every TCP socket the driver and its Ray processes listen on while trials
run (the ports check: all must be loopback). A sweep is ok when sweep.json and trials.csv hold
exactly the requested trials, numbered 0 .. trials-1, every one complete, none lost or
duplicated, no process left behind and no listener off loopback. Prints a table, writes JSON.

    python benchmarks/fault_injection_sweeps.py --backends ray --out benchmarks/fault_injection_sweeps_ray.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIG = {
    "seed": 0,
    "tasks": {"name": "sinusoid", "shots": 5, "queries": 5},
    "model": {"name": "mlp", "hidden": [16, 16]},
    "learner": {"name": "maml", "inner_lr": 0.01, "inner_steps": 1},
    "outer": {"optimizer": "adam", "lr": 0.001, "meta_batch": 2, "steps": 60},
    "run": {"validate_every": 10, "val_tasks": 8, "test_tasks": 8, "eval_batch": 8, "checkpoint_every": 0,
            "log_every": 10, "threads": 1, "progress": False},
}
SPACE = {"learner.inner_lr": {"float": [1e-3, 0.05], "log": True}}
KILL_EXTRA_S = 3.0


def _name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")[-60:]
    except OSError:
        return "?"


def driver_tokens(driver_pid: int) -> set[str]:
    """The owner token of the local Ray that ``driver_pid`` started, read from its reaper's command line
    (``_reaper.py TOKEN DRIVER_PID``), so that Ray instances of other sweeps on this machine (other users
    run theirs at the same time) are never counted."""
    tokens = set()
    for entry in os.listdir("/proc"):
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        argv = [a for a in argv if a]
        if len(argv) >= 3 and argv[-3].endswith("_reaper.py") and argv[-1] == str(driver_pid):
            tokens.add(argv[-2])
    return tokens


def _address(hexed: str) -> str:
    raw = bytes.fromhex(hexed)
    data = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))  # /proc prints 32-bit words little-endian
    if len(data) == 4:
        return ".".join(str(b) for b in data)
    if data[:12] == b"\0" * 10 + b"\xff\xff":
        return "::ffff:" + ".".join(str(b) for b in data[12:])
    return ":".join(data[i:i + 2].hex() for i in range(0, 16, 2))


def is_loopback(address: str) -> bool:
    return address.startswith(("127.", "::ffff:127.")) or address == "0000:" * 7 + "0001"


def listeners(pids) -> set[str]:
    """``address:port`` of the TCP sockets in LISTEN state that ``pids`` hold (/proc/net/tcp, tcp6)."""
    inodes = set()
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                host, port = fields[1].split(":")
                found.add(f"{_address(host)}:{int(port, 16)}")
    return found


def finished_now(backend: str, out: Path) -> dict[int, dict]:
    """{number: params} of the trials finished (complete) on disk right now."""
    if backend in ("ray", "nni"):
        done = {}
        journal = out / f"{backend}_trials.jsonl"
        for line in journal.read_text().splitlines() if journal.exists() else []:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("event") == "end" and entry["record"]["state"] == "complete":
                done[entry["record"]["number"]] = entry["record"]["params"]
        return done
    if not (out / "study.db").exists():
        return {}
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        study = optuna.load_study(study_name="autometa", storage=f"sqlite:///{out / 'study.db'}")
    except Exception:
        return {}
    # a re-run of an interrupted trial carries the interrupted trial's number (autometa_retry_of)
    return {t.user_attrs.get("autometa_retry_of", t.number): dict(t.params) for t in study.get_trials(deepcopy=False)
            if t.state == optuna.trial.TrialState.COMPLETE}


def one_sweep(backend: str, index: int, trials: int, kills: int, rng: random.Random, folder: Path) -> dict:
    from autometa.search._reaper import _alive, family

    (folder / "c.yaml").write_text(yaml.safe_dump(CONFIG))
    (folder / "s.yaml").write_text(yaml.safe_dump(SPACE))
    out = folder / "out"
    command = [sys.executable, "-m", "autometa.cli", "sweep", str(folder / "c.yaml"), "--space", str(folder / "s.yaml"),
               "--backend", backend, "--trials", str(trials), "--out", str(out), "--seed", str(index)]
    if backend == "ray":
        command += ["--num-cpus", "2"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}
    events, seen_finished, left_after_kills, listening = [], {}, [], set()
    start = time.time()
    attempt = 0
    while True:
        resume = ["--resume"] if attempt else []
        stderr = open(folder / f"stderr{attempt}.txt", "wb")  # a file, not a pipe that could fill while we poll
        driver = subprocess.Popen(command + resume, stdout=subprocess.DEVNULL, stderr=stderr, env=env,
                                  start_new_session=True)
        stderr.close()
        if attempt < kills:
            # a random moment: once a random number of trials (0 to all but one) have finished,
            # plus a random extra delay, so that kills fall during Ray's start, trials and writes
            wait_for = rng.randint(0, trials - 1)
            extra = rng.uniform(0.0, KILL_EXTRA_S)
            processes, t0, fired = {}, time.time(), None
            while driver.poll() is None and time.time() - t0 < 900:
                if backend == "ray":  # Optuna and NNI start no process; only this driver's Ray is counted
                    for token in driver_tokens(driver.pid):
                        processes.update(family(token, {driver.pid}))
                    listening |= listeners(list(_alive(processes)) + [driver.pid])
                if fired is None and len(finished_now(backend, out)) >= wait_for:
                    fired = time.time()
                if fired is not None and time.time() - fired >= extra:
                    break
                time.sleep(0.2)
            delay = time.time() - t0
            if driver.poll() is None:
                finished = finished_now(backend, out)
                driver.send_signal(signal.SIGKILL)
                driver.wait()
                for number, params in finished.items():
                    seen_finished.setdefault(number, params)
                deadline = time.time() + 30
                while _alive(processes) and time.time() < deadline:
                    time.sleep(0.5)
                left = len(_alive(processes))
                left_after_kills.append(left)
                left_names = sorted({_name(pid) for pid in _alive(processes)})
                events.append({"kill_after_s": round(delay, 2), "waited_for_finished": wait_for,
                               "extra_delay_s": round(extra, 2), "finished_at_kill": len(finished),
                               "ray_processes_seen": len(processes), "left_30s_after_kill": left,
                               "left_names": left_names})
                attempt += 1
                continue
        processes = {}
        if backend == "ray":  # the ports check in the run that finishes too
            while driver.poll() is None:
                for token in driver_tokens(driver.pid):
                    processes.update(family(token, {driver.pid}))
                listening |= listeners(list(_alive(processes)) + [driver.pid])
                time.sleep(0.5)
        driver.wait(timeout=1800)
        err = (folder / f"stderr{attempt}.txt").read_bytes()
        final = {"final_rc": driver.returncode, "stderr_tail": err.decode(errors="replace")[-300:]
                 if driver.returncode else ""}
        if backend == "ray":  # the sweep that finished ends its Ray too
            deadline = time.time() + 30
            while _alive(processes) and time.time() < deadline:
                time.sleep(0.5)
            final.update(ray_processes_seen=len(processes), left_30s_after_end=len(_alive(processes)))
            left_after_kills.append(final["left_30s_after_end"])
        events.append(final)
        break
    sweep = json.loads((out / "sweep.json").read_text()) if (out / "sweep.json").exists() else {"trials": []}
    complete = [t for t in sweep["trials"] if t["state"] == "complete"]
    by_number = {t["number"]: t for t in complete}
    lost = [n for n, params in seen_finished.items() if n not in by_number or by_number[n]["params"] != params]
    params = [json.dumps(t["params"], sort_keys=True) for t in complete]
    duplicated = len(params) - len(set(params))
    if backend in ("ray", "nni"):  # a number that ended twice in the journal ran twice
        ends = []
        for line in (out / f"{backend}_trials.jsonl").read_text().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("event") == "end":
                ends.append(entry["record"]["number"])
        duplicated += len(ends) - len(set(ends))
    numbers = sorted(t["number"] for t in sweep["trials"])
    csv_rows = len((out / "trials.csv").read_text().splitlines()) - 1 if (out / "trials.csv").exists() else 0
    off_loopback = sorted(a for a in listening if not is_loopback(a.rsplit(":", 1)[0]))
    exact = numbers == list(range(trials)) and len(complete) == trials and csv_rows == trials
    return {"backend": backend, "sweep": index, "requested": trials, "complete": len(complete),
            "trials_in_sweep_json": len(sweep["trials"]), "numbers": numbers, "trials_csv_rows": csv_rows,
            "counts": sweep.get("counts"), "rerun_after_interruption": sweep.get("info", {}).get("rerun"),
            "finished_before_kills": len(seen_finished), "lost": lost, "duplicated": duplicated,
            "kills": sum("kill_after_s" in e for e in events), "processes_left": sum(left_after_kills),
            "listeners": sorted(listening), "listeners_off_loopback": off_loopback,
            "ok": exact and not lost and not duplicated and not sum(left_after_kills) and not off_loopback,
            "wall_s": round(time.time() - start, 1), "events": events}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", nargs="+", default=["optuna", "ray"])
    parser.add_argument("--sweeps", type=int, default=3)
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--kills", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/fault_injection_sweeps.json")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    load_start = os.getloadavg()
    rows = []
    for backend in args.backends:
        for index in range(args.sweeps):
            with tempfile.TemporaryDirectory(prefix=f"fault-{backend}-") as folder:
                row = one_sweep(backend, index, args.trials, args.kills, rng, Path(folder))
            rows.append(row)
            print(f"{backend:7s} sweep {index}: {row['complete']}/{row['requested']} complete, kills {row['kills']} "
                  f"(at {[e.get('kill_after_s') for e in row['events'] if 'kill_after_s' in e]} s, finished then "
                  f"{[e.get('finished_at_kill') for e in row['events'] if 'kill_after_s' in e]}), lost {row['lost']}, "
                  f"duplicated {row['duplicated']}, processes left {row['processes_left']}, numbers {row['numbers']}, "
                  f"re-run {row['rerun_after_interruption']}, listeners {len(row['listeners'])} "
                  f"(off loopback {row['listeners_off_loopback']}), {row['wall_s']} s",
                  flush=True)
    load = os.getloadavg()
    summary = {"command": " ".join(sys.argv), "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
               "load_avg_at_end": load, "load_avg_at_start": load_start, "cpus": os.cpu_count(), "rows": rows,
               "all_ok": all(r["ok"] for r in rows)}
    Path(args.out).write_text(json.dumps(summary, indent=2))
    print(f"all ok: {summary['all_ok']}; load average {load[0]:.1f}; written to {args.out}")


if __name__ == "__main__":
    main()
