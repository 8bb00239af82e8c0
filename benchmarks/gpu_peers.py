"""Second-order MAML on a GPU: autometa's batching modes against learn2learn, higher, torchopt and a plain loop.

One process, the implementations alternating (each repetition runs all of them, in an order rotated
by one between repetitions), the same initial weights and the same task batches for all. For each
configuration (ways x inner steps x order):

- seconds per meta-step (median over repetitions of the mean of ``--steps`` timed meta-steps, after
  one warm-up step per repetition; ``torch.cuda.synchronize`` around the timed steps), tasks/s and
  the ratio to the fastest peer;
- peak memory of the timed steps (``torch.cuda.max_memory_allocated`` above what was allocated
  before them: weights, inputs, gradients);
- the meta-gradient of one step on ``--check-tasks`` tasks from the shared initial weights against
  the plain loop run in float64 (max |a - b| / max |b| over all parameters together), under the
  precision the timing used, and, for autometa's loop and vmap, under each precision policy
  (fp32 = TF32 off, tf32, bf16 autocast, torch's defaults) and in float64 (where any error is a wrong
  kernel, not rounding): the precision table of issue 15.

Conv4 (64 filters, batch norm with batch statistics), 1-shot, 15 queries per class, meta-batch 32,
inner lr 0.4, Adam 1e-3 outer step; real Omniglot tasks when ``$AUTOMETA_DATA`` holds omniglot.npz,
else random images of the same shape (said in the JSON).

Usage (on a GPU; the suite runs it, see benchmarks/gpu_suite.sh)::

    python benchmarks/gpu_peers.py --device cuda --json peers.json
    python benchmarks/gpu_peers.py --device cpu --tiny --json /tmp/peers.json    # a dry run on a CPU

Timings are printed and written, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from autometa.hypergrad import precision, precision_state
from autometa.learners import MAML
from autometa.nets import Conv4
from autometa.tasks import TaskBatch

PEERS = ("plain", "learn2learn", "higher", "torchopt")
AUTOMETA = ("autometa-loop", "autometa-vmap", "autometa-vmap-unbounded")
INNER_LR = 0.4
OUTER_LR = 1e-3


def make_impl(name: str, model, first_order: bool, inner_steps: int):
    """``step(batch)``: accumulate the mean query loss's meta-gradient of ``batch`` into ``model``'s ``.grad``,
    the way a user of each library writes MAML (one task's graph alive at a time for the peers)."""
    if name.startswith("autometa"):
        batching = "loop" if name == "autometa-loop" else "vmap"
        budget = 1.0 if name == "autometa-vmap-unbounded" else None  # 1.0: all free memory; None: a quarter
        chunk = int(name.rsplit("chunk", 1)[1]) if "-chunk" in name else None  # autometa-vmap-chunk8
        learner = MAML(model, inner_lr=INNER_LR, inner_steps=inner_steps, first_order=first_order,
                       batching=batching, memory_budget=budget)
        learner.precision_policy = "torch"  # the precision in force is the benchmark's (set around the steps)

        def step(batch):
            learner.meta_backward(TaskBatch(*batch))
            if chunk is not None:  # from the next step on, a budget of exactly `chunk` measured tasks
                for plan in learner._plans.values():
                    plan.budget = chunk * plan.task_bytes
        step.learner = learner
        return step

    if name == "plain":
        from torch.func import functional_call
        names = [n for n, _ in model.named_parameters()]

        def step(batch):
            n = batch[0].shape[0]
            for sx, sy, qx, qy in zip(*batch):
                params = [p for _, p in model.named_parameters()]
                for _ in range(inner_steps):
                    loss = F.cross_entropy(functional_call(model, dict(zip(names, params)), (sx,)), sy)
                    grads = torch.autograd.grad(loss, params, create_graph=not first_order)
                    params = [p - INNER_LR * g for p, g in zip(params, grads)]
                qloss = F.cross_entropy(functional_call(model, dict(zip(names, params)), (qx,)), qy)
                (qloss / n).backward()
        return step

    if name == "learn2learn":
        import learn2learn as l2l
        maml = l2l.algorithms.MAML(model, lr=INNER_LR, first_order=first_order)

        def step(batch):
            n = batch[0].shape[0]
            for sx, sy, qx, qy in zip(*batch):
                learner = maml.clone()
                for _ in range(inner_steps):
                    learner.adapt(F.cross_entropy(learner(sx), sy))
                (F.cross_entropy(learner(qx), qy) / n).backward()
        return step

    if name == "higher":
        import higher
        inner_opt = torch.optim.SGD(model.parameters(), lr=INNER_LR)
        callback = (lambda grads: [g.detach() for g in grads]) if first_order else None

        def step(batch):
            n = batch[0].shape[0]
            for sx, sy, qx, qy in zip(*batch):
                with higher.innerloop_ctx(model, inner_opt, copy_initial_weights=False) as (fmodel, diffopt):
                    for _ in range(inner_steps):
                        diffopt.step(F.cross_entropy(fmodel(sx), sy), grad_callback=callback)
                    (F.cross_entropy(fmodel(qx), qy) / n).backward()
        return step

    if name == "torchopt":
        import torchopt
        if not first_order:
            inner_opt = torchopt.MetaSGD(model, lr=INNER_LR)
            net_state = torchopt.extract_state_dict(model, by="reference", detach_buffers=True)
            opt_state = torchopt.extract_state_dict(inner_opt, by="reference")

            def step(batch):
                n = batch[0].shape[0]
                for sx, sy, qx, qy in zip(*batch):
                    for _ in range(inner_steps):
                        inner_opt.step(F.cross_entropy(model(sx), sy))
                    (F.cross_entropy(model(qx), qy) / n).backward()
                    torchopt.recover_state_dict(model, net_state)
                    torchopt.recover_state_dict(inner_opt, opt_state)
            return step
        from torch.func import functional_call
        names = [n for n, _ in model.named_parameters()]
        sgd = torchopt.sgd(lr=INNER_LR)

        def step(batch):
            n = batch[0].shape[0]
            for sx, sy, qx, qy in zip(*batch):
                params = tuple(p for _, p in model.named_parameters())
                state = sgd.init(params)
                for _ in range(inner_steps):
                    loss = F.cross_entropy(functional_call(model, dict(zip(names, params)), (sx,)), sy)
                    grads = torch.autograd.grad(loss, params)
                    updates, state = sgd.update(grads, state, inplace=False)
                    params = torchopt.apply_updates(params, updates, inplace=False)
                qloss = F.cross_entropy(functional_call(model, dict(zip(names, params)), (qx,)), qy)
                (qloss / n).backward()
        return step

    raise SystemExit(f"unknown implementation {name!r}; choose from {AUTOMETA + PEERS}")


def available(names) -> tuple[list[str], dict[str, str]]:
    """The implementations whose library imports here, and why the others were left out."""
    keep, missing = [], {}
    for name in names:
        library = {"learn2learn": "learn2learn", "higher": "higher", "torchopt": "torchopt"}.get(name)
        if library:
            try:
                __import__(library)
            except Exception as exc:
                missing[name] = f"{type(exc).__name__}: {str(exc)[:200]}"
                continue
        keep.append(name)
    return keep, missing


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def peak_since(device, base: int) -> float | None:
    if torch.device(device).type != "cuda":
        return None
    return (torch.cuda.max_memory_allocated(device) - base) / 2**20


def task_batches(ways: int, meta_batch: int, count: int, hidden_image: int, device, seed: int = 1234):
    """``count`` meta-batches of Omniglot tasks (meta-training classes) or, without the data, random images."""
    gen = torch.Generator().manual_seed(seed)
    source = "random images"
    try:
        from autometa.tasks import make_tasks
        tasks = make_tasks({"name": "omniglot", "ways": ways, "shots": 1, "queries": 15}, "train")
        batches = [tasks.sample(meta_batch, gen).tensors for _ in range(count)]
        source = "omniglot (vinyals train split)"
    except Exception:
        batches = []
        for _ in range(count):
            sx = torch.rand(meta_batch, ways, 1, hidden_image, hidden_image, generator=gen)
            qx = torch.rand(meta_batch, ways * 15, 1, hidden_image, hidden_image, generator=gen)
            batches.append((sx, torch.arange(ways).repeat(meta_batch, 1), qx,
                            torch.arange(ways).repeat_interleave(15).repeat(meta_batch, 1)))
    return [tuple(t.to(device) for t in b) for b in batches], source


def rel_diff(grads, reference) -> float:
    """max |a - b| / max |b| over all parameters together (see benchmarks/maml_peers.py for why not per parameter)."""
    diff = max(float((g.double() - r).abs().max()) for g, r in zip(grads, reference))
    return diff / max(float(r.abs().max()) for r in reference)


def check_grads(name, init, ways, hidden, batch, first_order, inner_steps, device, policy, dtype=torch.float32):
    model = Conv4(1, ways, hidden=hidden).to(device=device, dtype=dtype)
    model.load_state_dict(init)
    step = make_impl(name, model, first_order, inner_steps)
    cast = tuple(t.to(dtype) if t.is_floating_point() else t for t in batch)
    with precision(policy, device):
        step(cast)
    return [p.grad.detach().double() for p in model.parameters()]


def measure(name, init, ways, hidden, batches, first_order, inner_steps, device, steps, policy):
    """One repetition: build, one warm-up meta-step, ``steps`` timed meta-steps."""
    model = Conv4(1, ways, hidden=hidden).to(device)
    model.load_state_dict(init)
    step = make_impl(name, model, first_order, inner_steps)
    outer = torch.optim.Adam(model.parameters(), lr=OUTER_LR)
    with precision(policy, device):
        outer.zero_grad(set_to_none=True)
        step(batches[0])
        outer.step()
        sync(device)
        base = torch.cuda.memory_allocated(device) if torch.device(device).type == "cuda" else 0
        if torch.device(device).type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        times = []
        for i in range(1, steps + 1):
            start = time.perf_counter()
            outer.zero_grad(set_to_none=False)  # keep .grad allocated: the peak is the step's own
            step(batches[i % len(batches)])
            outer.step()
            sync(device)
            times.append(time.perf_counter() - start)
    chunks = getattr(getattr(step, "learner", None), "_plans", {})
    plan = next(iter(chunks.values()), None)
    return {"step_s": statistics.mean(times), "peak_mib": peak_since(device, base),
            "chunks": list(plan.chunks) if plan is not None else None,
            "task_mib": plan.task_bytes / 2**20 if plan is not None and plan.task_bytes else None}


def run_config(args, impls, ways, inner_steps, order, results) -> None:
    device = args.device
    first_order = order == "first"
    torch.manual_seed(0)
    init = {k: v.to(device) for k, v in Conv4(1, ways, hidden=args.hidden).state_dict().items()}
    batches, source = task_batches(ways, args.meta_batch, args.steps + 1, 28, device)
    check = tuple(t[:args.check_tasks] for t in batches[0])
    init64 = {k: v.double() for k, v in init.items()}
    ref = check_grads("plain", init64, ways, args.hidden, check, first_order, inner_steps, device, "fp32",
                      torch.float64)
    rows = {}
    for impl in impls:
        if args.chunk_curve is not None and impl != impls[0] and impl != "autometa-loop":
            rows[impl] = {"grad_rel_err_vs_float64": rows[impls[0]]["grad_rel_err_vs_float64"], "reps": []}
            continue  # the chunks change only the summation order: one check stands for all
        grads = check_grads(impl, init, ways, args.hidden, check, first_order, inner_steps, device, args.precision)
        rows[impl] = {"grad_rel_err_vs_float64": rel_diff(grads, ref), "reps": []}
    precision_table = {}
    for impl in ("autometa-loop", "autometa-vmap", "plain"):
        if impl in impls and args.chunk_curve is None:
            precision_table[impl] = {
                policy: rel_diff(check_grads(impl, init, ways, args.hidden, check, first_order, inner_steps, device,
                                             policy), ref)
                for policy in ("fp32", "tf32", "bf16", "torch")}
            # float64 through the same kernels: an error here is a wrong result, not rounding (TF32 or not)
            precision_table[impl]["float64"] = rel_diff(
                check_grads(impl, init64, ways, args.hidden, check, first_order, inner_steps, device, "fp32",
                            torch.float64), ref)
    for rep in range(args.reps):
        shift = rep % len(impls)
        for impl in impls[shift:] + impls[:shift]:
            try:
                res = measure(impl, init, ways, args.hidden, batches, first_order, inner_steps, device, args.steps,
                              args.precision)
            except torch.cuda.OutOfMemoryError as exc:  # an unbounded vmap may not fit: recorded, not fatal
                res = {"error": f"out of memory: {str(exc)[:160]}"}
                torch.cuda.empty_cache()
            rows[impl]["reps"].append(res)
            shown = "error" if "error" in res else f"{res['step_s']:.4f} s/step peak {res['peak_mib']} MiB"
            print(f"  {ways}-way {inner_steps} step(s) {order} rep {rep} {impl:24s} {shown}", flush=True)
    for row in rows.values():
        good = [r for r in row["reps"] if "error" not in r]
        if good:
            row["s_per_step"] = statistics.median(r["step_s"] for r in good)
            row["tasks_per_s"] = args.meta_batch / row["s_per_step"]
            peaks = [r["peak_mib"] for r in good if r["peak_mib"] is not None]
            row["peak_mib"] = statistics.median(peaks) if peaks else None
            row["chunks"] = good[-1]["chunks"]
            row["task_mib"] = good[-1]["task_mib"]
    peers = [r["s_per_step"] for k, r in rows.items() if k in PEERS and "s_per_step" in r]
    best = min(peers) if peers else None
    for row in rows.values():
        if best and "s_per_step" in row:
            row["vs_fastest_peer"] = best / row["s_per_step"]
    results["runs"].append({"ways": ways, "inner_steps": inner_steps, "order": order, "tasks": source,
                            "precision_table": precision_table, "rows": rows})


def report(results) -> None:
    m = results["machine"]
    print(f"\n{m['device_name']} ({m['device']}), torch {m['torch']}, timing precision {results['config']['precision']}"
          f", precision state at start {m['precision_state']}")
    for run in results["runs"]:
        print(f"\n{run['ways']}-way 1-shot, {run['inner_steps']} inner step(s), {run['order']} order ({run['tasks']})")
        print(f"{'implementation':26s} {'s/step':>8s} {'tasks/s':>8s} {'vs peer':>8s} {'peak MiB':>9s} "
              f"{'err vs f64':>10s} chunks")
        for name, r in sorted(run["rows"].items(), key=lambda kv: kv[1].get("s_per_step", 1e9)):
            if "s_per_step" not in r:
                print(f"{name:26s} {r['reps'][0].get('error', '')}")
                continue
            peak = "-" if r["peak_mib"] is None else f"{r['peak_mib']:.0f}"
            ratio = f"{r['vs_fastest_peer']:.2f}x" if "vs_fastest_peer" in r else "-"
            print(f"{name:26s} {r['s_per_step']:8.4f} {r['tasks_per_s']:8.1f} {ratio:>8s} {peak:>9s} "
                  f"{r['grad_rel_err_vs_float64']:10.1e} {r.get('chunks')}")
        for impl, errors in run["precision_table"].items():
            print(f"  precision, {impl}: " + ", ".join(f"{k} {v:.1e}" for k, v in errors.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--configs", nargs="+", default=["5:1", "20:1", "5:5"], help="ways:inner_steps")
    parser.add_argument("--orders", nargs="+", choices=("second", "first"), default=["second", "first"])
    parser.add_argument("--impls", nargs="+", default=list(PEERS + AUTOMETA))
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3, help="timed meta-steps per repetition")
    parser.add_argument("--meta-batch", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--check-tasks", type=int, default=4)
    parser.add_argument("--precision", default="fp32", help="policy of the timed steps: fp32 (TF32 off), tf32, "
                                                           "bf16, torch")
    parser.add_argument("--chunk-curve", type=int, nargs="*", default=None, metavar="CHUNK",
                        help="instead of the peers: autometa's vmap with these chunk sizes (speed/memory curve)")
    parser.add_argument("--tiny", action="store_true", help="a dry run: width 8, meta-batch 4, 1 rep, 1 step, "
                                                            "5-way 1 step only")
    parser.add_argument("--json")
    args = parser.parse_args()
    if args.tiny:
        args.hidden, args.meta_batch, args.reps, args.steps, args.check_tasks = 8, 4, 1, 1, 2
        args.configs = ["5:1"]
    if args.chunk_curve is not None:
        args.impls = [f"autometa-vmap-chunk{c}" for c in (args.chunk_curve or [1, 2, 4, 8, 16, 32])
                      if c <= args.meta_batch] + ["autometa-loop"]
    impls, missing = available(args.impls)
    device = torch.device(args.device)
    results = {"machine": {"device": str(device), "device_name": torch.cuda.get_device_name(device)
                           if device.type == "cuda" else platform.processor() or "cpu",
                           "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
                           "precision_state": precision_state(), "cpu_threads": torch.get_num_threads()},
               "config": {"model": f"Conv4({args.hidden}, batch norm with batch statistics)", "shots": 1,
                          "queries": 15, "meta_batch": args.meta_batch, "inner_lr": INNER_LR,
                          "outer": f"Adam lr {OUTER_LR}", "reps": args.reps, "steps_per_rep": args.steps,
                          "precision": args.precision, "tiny": args.tiny},
               "left_out": missing, "runs": []}
    if missing:
        print(f"left out (not importable): {missing}", flush=True)
    for config in args.configs:
        ways, inner_steps = (int(v) for v in config.split(":"))
        for order in args.orders:
            run_config(args, impls, ways, inner_steps, order, results)
            if args.json:  # after every block, so that an interrupted run keeps what it measured
                with open(args.json, "w") as f:
                    json.dump(results, f, indent=1)
    report(results)


if __name__ == "__main__":
    main()
