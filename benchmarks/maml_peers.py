"""MAML meta-training throughput and peak memory: autometa against learn2learn, higher, torchopt.

Second-order MAML and FOMAML with Conv4 (64 filters, batch norm with batch statistics) on real
Omniglot tasks (``autometa.tasks.make_tasks``, Vinyals split, meta-training classes), N-way
1-shot with 15 queries per class, meta-batch 32, 1 inner step, inner lr 0.4, Adam outer step.

Protocol (DESIGN.md, "Performance protocol"):
- every implementation starts from the same initial weights and sees the same task batches
  (written once to a file by the driver, read by every worker);
- each measurement runs in a fresh subprocess (so peak RSS belongs to one configuration), in
  the same interpreter and torch, with the same number of threads;
- the implementations alternate: each repetition runs all of them, in an order rotated by one
  between repetitions, so that load from other processes affects all of them alike;
- reported: medians over repetitions of wall and CPU seconds per meta-step (CPU time, of all
  the worker's threads, is what a loaded machine disturbs least), tasks / s, the ratio to the
  fastest peer, the peak RSS increase of the meta-steps (every worker imports every library
  first, so all start from the same heap), and the meta-gradient of a warm-up step on 4 tasks
  compared with autometa's and with a float64 computation (max |a - b| / max |b| over all
  parameters together);
- ``OMP_WAIT_POLICY=PASSIVE`` unless set: OpenMP's default spinning stalls two-thread runs by
  10x or more when other processes load the CPU.
- FLOPs of one task counted with ``torch.utils.flop_counter.FlopCounterMode`` and compared
  with the fp32 matmul rate measured in the same run (2048 x 2048 matmuls).

Usage (peers venv built with ../shared/peers/install-peers.sh, autometa installed there)::

    AUTOMETA_DATA=/work/shared/data nice -n 5 /work/peers-venv/bin/python benchmarks/maml_peers.py \
        --ways 5 20 --orders second first --reps 5 --steps 1 --json benchmarks/maml_peers.json

Timings are printed and written, never asserted.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

PEERS = ("learn2learn", "higher", "torchopt", "plain")
AUTOMETA = ("autometa", "autometa-threads")
INNER_LR = 0.4
OUTER_LR = 1e-3
CHECK_TASKS = 4


# ----------------------------------------------------------------------------- implementations
# Each `meta_backward_<impl>(model, batch, first_order)` accumulates the mean query loss's
# meta-gradient of the tasks in `batch` into `.grad` of `model`'s parameters, the way a user of
# that library writes MAML (one task's graph alive at a time).

def make_impl(name: str, model, first_order: bool):
    import torch
    import torch.nn.functional as F

    if name.startswith("autometa"):
        from autometa.learners import MAML
        from autometa.tasks import TaskBatch
        batching = {"autometa": "loop", "autometa-threads": "threads"}[name]
        learner = MAML(model, inner_lr=INNER_LR, inner_steps=1, first_order=first_order, batching=batching)

        def step(batch):
            learner.meta_backward(TaskBatch(*batch))
        return step

    if name == "plain":
        from torch.func import functional_call
        names = [n for n, _ in model.named_parameters()]

        def step(batch):
            params = [p for _, p in model.named_parameters()]
            n = batch[0].shape[0]
            for sx, sy, qx, qy in zip(*batch):
                loss = F.cross_entropy(functional_call(model, dict(zip(names, params)), (sx,)), sy)
                grads = torch.autograd.grad(loss, params, create_graph=not first_order)
                fast = [p - INNER_LR * g for p, g in zip(params, grads)]
                qloss = F.cross_entropy(functional_call(model, dict(zip(names, fast)), (qx,)), qy)
                (qloss / n).backward()
        return step

    if name == "learn2learn":
        import learn2learn as l2l
        maml = l2l.algorithms.MAML(model, lr=INNER_LR, first_order=first_order)

        def step(batch):
            n = batch[0].shape[0]
            for sx, sy, qx, qy in zip(*batch):
                learner = maml.clone()
                learner.adapt(F.cross_entropy(learner(sx), sy))
                (F.cross_entropy(learner(qx), qy) / n).backward()
        return step

    if name == "higher":
        import higher
        inner_opt = torch.optim.SGD(model.parameters(), lr=INNER_LR)
        # higher has no first-order switch; its documented route is a gradient callback
        callback = (lambda grads: [g.detach() for g in grads]) if first_order else None

        def step(batch):
            n = batch[0].shape[0]
            for sx, sy, qx, qy in zip(*batch):
                with higher.innerloop_ctx(model, inner_opt, copy_initial_weights=False) as (fmodel, diffopt):
                    diffopt.step(F.cross_entropy(fmodel(sx), sy), grad_callback=callback)
                    (F.cross_entropy(fmodel(qx), qy) / n).backward()
        return step

    if name == "torchopt":
        import torchopt
        if not first_order:
            # torchopt's MAML example: MetaSGD steps the module in place, then it is restored
            inner_opt = torchopt.MetaSGD(model, lr=INNER_LR)
            net_state = torchopt.extract_state_dict(model, by="reference", detach_buffers=True)
            opt_state = torchopt.extract_state_dict(inner_opt, by="reference")

            def step(batch):
                n = batch[0].shape[0]
                for sx, sy, qx, qy in zip(*batch):
                    inner_opt.step(F.cross_entropy(model(sx), sy))
                    (F.cross_entropy(model(qx), qy) / n).backward()
                    torchopt.recover_state_dict(model, net_state)
                    torchopt.recover_state_dict(inner_opt, opt_state)
            return step
        # first order: torchopt's functional API with a gradient that is not differentiated
        from torch.func import functional_call
        names = [n for n, _ in model.named_parameters()]
        sgd = torchopt.sgd(lr=INNER_LR)

        def step(batch):
            params = tuple(p for _, p in model.named_parameters())
            n = batch[0].shape[0]
            for sx, sy, qx, qy in zip(*batch):
                state = sgd.init(params)
                loss = F.cross_entropy(functional_call(model, dict(zip(names, params)), (sx,)), sy)
                grads = torch.autograd.grad(loss, params)
                updates, _ = sgd.update(grads, state, inplace=False)
                fast = torchopt.apply_updates(params, updates, inplace=False)
                qloss = F.cross_entropy(functional_call(model, dict(zip(names, fast)), (qx,)), qy)
                (qloss / n).backward()
        return step

    raise SystemExit(f"unknown implementation {name!r}; choose from {AUTOMETA + PEERS}")


# ----------------------------------------------------------------------------- worker
def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def worker(args) -> None:
    import torch
    torch.set_num_threads(args.threads)
    from autometa.nets import Conv4

    # every worker imports every library before its baseline, so that each measurement starts
    # from the same heap (learn2learn alone imports torchvision and gym: without this, its
    # larger baseline heap has free space that hides part of its meta-step's peak)
    for library in ("learn2learn", "higher", "torchopt"):
        try:
            importlib.import_module(library)
        except ImportError:
            pass
    data = torch.load(args.inputs, weights_only=True)
    model = Conv4(1, data["ways"], hidden=64)
    model.load_state_dict(data["init"])
    batches = data["batches"]
    step = make_impl(args.impl, model, args.order == "first")
    outer = torch.optim.Adam(model.parameters(), lr=OUTER_LR)
    rss_before, peak_before = _rss_kib(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # warm-up on the first CHECK_TASKS tasks of batch 0, from the shared initial weights: its
    # meta-gradient is the one compared between implementations
    step(tuple(t[:CHECK_TASKS] for t in batches[0]))
    if args.grads:
        torch.save([p.grad.clone() for p in model.parameters()], args.grads)
    times, cpu_times = [], []
    for i in range(1, args.steps + 1):
        outer.zero_grad(set_to_none=True)
        start, cpu_start = time.perf_counter(), time.process_time()
        step(batches[i % len(batches)])
        outer.step()
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    peak_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"impl": args.impl, "step_times": times, "cpu_times": cpu_times, "rss_before_kib": rss_before,
                      "peak_before_kib": peak_before, "peak_after_kib": peak_after,
                      "peak_delta_mib": (peak_after - rss_before) / 1024,
                      "torch": torch.__version__, "threads": torch.get_num_threads()}))


# ----------------------------------------------------------------------------- driver
def matmul_rate(threads: int, size: int = 2048, repeats: int = 10) -> dict[str, float]:
    """fp32 rate of ``size`` x ``size`` matmuls on ``threads`` threads: the best and median
    FLOP per wall second, and the median FLOP per CPU second (all threads' time), which
    other processes' load disturbs much less."""
    import torch
    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    wall, cpu = [], []
    for _ in range(repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        a @ b
        wall.append(2 * size ** 3 / (time.perf_counter() - start))
        cpu.append(2 * size ** 3 / (time.process_time() - cpu_start))
    return {"best_per_wall_s": max(wall), "median_per_wall_s": statistics.median(wall),
            "median_per_cpu_s": statistics.median(cpu)}


def count_flops(ways: int, first_order: bool, inputs: str) -> dict[str, float]:
    """FLOPs of one task's meta-gradient, per implementation that can be counted."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from autometa.nets import Conv4
    data = torch.load(inputs, weights_only=True)
    one = tuple(t[:1] for t in data["batches"][0])
    out = {}
    for name in ("plain", "autometa"):
        model = Conv4(1, ways, hidden=64)
        model.load_state_dict(data["init"])
        step = make_impl(name, model, first_order)
        with FlopCounterMode(display=False) as counter:
            step(one)
        out[name] = float(counter.get_total_flops())
    return out


def prepare_inputs(ways: int, batches: int, meta_batch: int, path: str) -> None:
    import torch

    from autometa.nets import Conv4
    from autometa.tasks import make_tasks
    tasks = make_tasks({"name": "omniglot", "ways": ways, "shots": 1, "queries": 15}, "train")
    gen = torch.Generator().manual_seed(1234)
    sampled = [tasks.sample(meta_batch, gen).tensors for _ in range(batches)]
    torch.manual_seed(0)  # the script's own process: seeds the shared initial weights only
    init = Conv4(1, ways, hidden=64).state_dict()
    torch.save({"ways": ways, "init": init, "batches": sampled}, path)


def float64_reference(ways: int, first_order: bool, inputs: str):
    """The plain loop's meta-gradient on the check tasks, computed in float64."""
    import torch

    from autometa.nets import Conv4
    data = torch.load(inputs, weights_only=True)
    model = Conv4(1, ways, hidden=64).double()
    model.load_state_dict({k: v.double() for k, v in data["init"].items()})
    step = make_impl("plain", model, first_order)
    step(tuple(t[:CHECK_TASKS].double() if t.is_floating_point() else t[:CHECK_TASKS] for t in data["batches"][0]))
    return [p.grad for p in model.parameters()]


def rel_diff(grads, reference) -> float:
    """max |a - b| / max |b| over all parameters together.

    Not per parameter: the convolution biases before batch norm have a true gradient of 0,
    so theirs is float32 noise (~1e-8) and a per-parameter ratio would compare noise with noise.
    """
    diff = max(float((g - r).abs().max()) for g, r in zip(grads, reference))
    return diff / max(float(r.abs().max()) for r in reference)


def run_worker(impl, order, inputs, steps, threads, grads=None, python=None) -> dict:
    cmd = [python or sys.executable, os.path.abspath(__file__), "worker", "--impl", impl, "--order", order,
           "--inputs", inputs, "--steps", str(steps), "--threads", str(threads)]
    if grads:
        cmd += ["--grads", grads]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {impl} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()


def driver(args) -> None:
    import torch
    impls = args.impls
    results = {"machine": {"cpu": _cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
                           "torch": torch.__version__, "threads": args.threads, "load_start": load_average(),
                           "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "PASSIVE"),
                           "autometa_code": _code_state()},
               "config": {"model": "Conv4(64, batch norm with batch statistics)", "shots": 1, "queries": 15,
                          "meta_batch": args.meta_batch, "inner_steps": 1, "inner_lr": INNER_LR,
                          "outer": f"Adam lr {OUTER_LR}", "reps": args.reps, "steps_per_rep": args.steps},
               "versions": _versions(impls), "runs": []}
    results["matmul_flops_per_s"] = [matmul_rate(args.threads)]
    with tempfile.TemporaryDirectory() as tmp:
        for ways in args.ways:
            inputs = os.path.join(tmp, f"tasks{ways}.pt")
            prepare_inputs(ways, args.steps + 1, args.meta_batch, inputs)
            for order in args.orders:
                print(f"== {ways}-way, {order} order", flush=True)
                flops = count_flops(ways, order == "first", inputs)
                ref64 = float64_reference(ways, order == "first", inputs)
                torch.set_num_threads(args.threads)
                per_impl = {i: [] for i in impls}
                grads = {}
                for rep in range(args.reps):
                    shift = rep % len(impls)
                    for impl in impls[shift:] + impls[:shift]:
                        gpath = os.path.join(tmp, f"g_{impl}.pt") if rep == 0 else None
                        res = run_worker(impl, order, inputs, args.steps, args.threads, gpath)
                        per_impl[impl].append(res)
                        if gpath:
                            grads[impl] = torch.load(gpath, weights_only=True)
                        print(f"  rep {rep} {impl:18s} {statistics.mean(res['step_times']):6.3f} s/step  "
                              f"{statistics.mean(res['cpu_times']):6.3f} CPU s/step  "
                              f"peak +{res['peak_delta_mib']:.0f} MiB  load {load_average()[0]:.2f}", flush=True)
                ref = grads.get("autometa") or grads.get(impls[0])
                rows = {}
                for impl in impls:
                    step_s = statistics.median(statistics.mean(r["step_times"]) for r in per_impl[impl])
                    cpu_s = statistics.median(statistics.mean(r["cpu_times"]) for r in per_impl[impl])
                    rows[impl] = {"s_per_step": step_s, "tasks_per_s": args.meta_batch / step_s,
                                  "cpu_s_per_step": cpu_s, "tasks_per_cpu_s": args.meta_batch / cpu_s,
                                  "peak_delta_mib": statistics.median(r["peak_delta_mib"] for r in per_impl[impl]),
                                  "grad_rel_diff_vs_autometa": rel_diff(grads[impl], ref),
                                  "grad_rel_err_vs_float64": rel_diff([g.double() for g in grads[impl]], ref64),
                                  "all_step_means": [statistics.mean(r["step_times"]) for r in per_impl[impl]],
                                  "all_cpu_means": [statistics.mean(r["cpu_times"]) for r in per_impl[impl]]}
                results["runs"].append({"ways": ways, "order": order, "flops_per_task": flops, "rows": rows})
                if args.json:  # after every block, so that an interrupted run keeps what it measured
                    with open(args.json, "w") as f:
                        json.dump(results, f, indent=1)
        results["matmul_flops_per_s"].append(matmul_rate(args.threads))
    results["machine"]["load_end"] = load_average()
    _report(results)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


def _report(results) -> None:
    rate = max(m["best_per_wall_s"] for m in results["matmul_flops_per_s"])
    rate_cpu = statistics.median(m["median_per_cpu_s"] for m in results["matmul_flops_per_s"])
    print(f"\nmachine: {results['machine']['cpu']}, {results['machine']['cores']} cores, torch "
          f"{results['machine']['torch']}, {results['machine']['threads']} threads; fp32 matmul best "
          f"{rate / 1e9:.1f} GFLOP/s, {rate_cpu / 1e9:.1f} GFLOP per CPU-second; load "
          f"{results['machine']['load_start']} -> {results['machine'].get('load_end')}")
    for run in results["runs"]:
        rows = run["rows"]
        peers = [r for k, r in rows.items() if k in PEERS]
        best = min((r["s_per_step"] for r in peers), default=None)
        flops = run["flops_per_task"]["plain"]
        print(f"\n{run['ways']}-way 1-shot, {run['order']} order; {flops / 1e9:.2f} GFLOP/task (autometa "
              f"{run['flops_per_task']['autometa'] / 1e9:.2f})")
        best_cpu = min((r["cpu_s_per_step"] for r in peers), default=None)
        print(f"{'implementation':18s} {'s/step':>7s} {'tasks/s':>8s} {'vs best peer':>12s} {'CPU s/step':>10s} "
              f"{'vs best peer':>12s} {'GFLOP/s':>8s} "
              f"{'% matmul':>8s} {'GFLOP/CPU-s':>11s} {'% matmul':>8s} {'peak MiB':>8s} {'vs autometa':>11s} "
              f"{'vs float64':>10s}")
        for name, r in sorted(rows.items(), key=lambda kv: kv[1]["s_per_step"]):
            achieved = flops * r["tasks_per_s"]
            achieved_cpu = flops * r["tasks_per_cpu_s"]
            ratio = f"{best / r['s_per_step']:.2f}x" if best else "-"
            cpu_ratio = f"{best_cpu / r['cpu_s_per_step']:.2f}x" if best_cpu else "-"
            print(f"{name:18s} {r['s_per_step']:7.3f} {r['tasks_per_s']:8.2f} {ratio:>12s} {r['cpu_s_per_step']:10.3f} "
                  f"{cpu_ratio:>12s} {achieved / 1e9:8.1f} "
                  f"{100 * achieved / rate:7.0f}% {achieved_cpu / 1e9:11.1f} {100 * achieved_cpu / rate_cpu:7.0f}% "
                  f"{r['peak_delta_mib']:8.0f} {r['grad_rel_diff_vs_autometa']:11.1e} "
                  f"{r['grad_rel_err_vs_float64']:10.1e}")


def _code_state() -> str:
    """The commit and a hash of the uncommitted changes of the autometa package measured."""
    import hashlib

    import autometa
    root = os.path.dirname(os.path.dirname(os.path.abspath(autometa.__file__)))
    def git(*a):
        return subprocess.run(["git", "-C", root, *a], capture_output=True, text=True).stdout
    diff = git("diff", "HEAD", "--", "autometa")
    return f"{git('rev-parse', '--short', 'HEAD').strip()} + diff {hashlib.sha1(diff.encode()).hexdigest()[:10]}"


def _cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration):
        return platform.processor()


def _versions(impls) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version
    out = {}
    for pkg in ("torch", "autometa", "learn2learn", "higher", "torchopt"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    w = sub.add_parser("worker", help="one measurement in this process (used by the driver)")
    w.add_argument("--impl", required=True)
    w.add_argument("--order", choices=("second", "first"), required=True)
    w.add_argument("--inputs", required=True)
    w.add_argument("--steps", type=int, default=2)
    w.add_argument("--threads", type=int, default=2)
    w.add_argument("--grads")
    parser.add_argument("--ways", type=int, nargs="+", default=[5, 20])
    parser.add_argument("--orders", nargs="+", choices=("second", "first"), default=["second", "first"])
    parser.add_argument("--impls", nargs="+", default=list(AUTOMETA + PEERS))
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--steps", type=int, default=2, help="timed meta-steps per worker, after one warm-up")
    parser.add_argument("--meta-batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json")
    args = parser.parse_args()
    if args.command == "worker":
        worker(args)
    else:
        driver(args)


if __name__ == "__main__":
    main()
