"""Issue 12 on one GPU: every data-slot study of the issue at once, each in its own process, within a wall budget.

Writes one ``autometa compare`` study config per process into ``OUT/configs/`` (distillation fits bounded by
``time_budget_s``, sized from ``--seconds``), runs them concurrently on ``--device``, stops any still running
at the deadline (their finished runs stay in ``runs.jsonl``), and writes ``OUT/summary.md`` / ``summary.json``
from every study's finished runs (``benchmarks/distillation_summary.py``).

The protocols (Zhao et al.'s reference code, ``main.py`` / ``main_DM.py``):
- the issue's shared protocol: 300 epochs, no augmentation, for every arm (``<arm>``);
- the reference's own protocol where it differs (``<arm>_ref``): MNIST DC and coresets are evaluated with
  its crop/scale/rotate augmentation for 1000 epochs; DSA and DM with DSA augmentation for 1000 epochs.
Published numbers: DC paper Table 2 (random, herding, k-center, forgetting, DC), DSA paper (DSA).

Usage (the GPU call runs it from ``benchmarks/gpu_issues_12_14.sh``)::

    python benchmarks/distillation/gpu_study.py --out OUT --seconds 420 [--eval-nets 5] [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

REF_MNIST = {"epochs": 1000, "augment": "crop_scale_rotate", "augment_mode": "dc"}
REF_DSA = {"epochs": 1000, "augment": "auto"}
CORESETS = {"random_real": "random_real", "herding": {"name": "herding"}, "k_center": {"name": "k_center"},
            "forgetting": {"name": "forgetting"}}


def studies(seconds: float, eval_nets: int, device: str) -> dict[str, dict]:
    """One config per process. ``seconds`` is the whole job's wall budget; fits get a share of it."""
    fit = 0.55 * seconds  # per process: the rest is evaluation (10-20 networks, up to 1000 epochs each)

    def study(dataset, ipc, arms, sets, reference, description):
        return {"study": "distillation", "description": description, "datasets": [dataset], "ipc": [ipc],
                "sets": sets, "eval_nets": eval_nets, "device": device, "precision": "fp32", "reference": reference,
                "evaluation": {"epochs": 300, "augment": None}, "arms": arms}

    def coresets(dataset, ipc):
        arms = {}
        for name, spec in CORESETS.items():
            sets = list(range(10)) if name == "random_real" else [0, 1]
            arms[name] = {"filler": spec, "sets": sets}
            if dataset == "mnist":
                arms[name + "_ref"] = {"filler": spec, "sets": sets, "evaluation": REF_MNIST}
        return study(dataset, ipc, arms, [0, 1], "random_real",
                     f"Coresets on {dataset}, {ipc} image(s) per class: the evaluator's sanity check.")

    def dc(dataset, ipc, sets, budget):
        spec = {"name": "dc", "iterations": 1000, "init": "real", "time_budget_s": budget}
        arms = {"dc": {"filler": spec}}
        if dataset == "mnist":
            arms["dc_ref"] = {"filler": spec, "evaluation": REF_MNIST}
        return study(dataset, ipc, arms, sets, "dc", f"DC on {dataset}, {ipc} image(s) per class, published loops.")

    def dsa_dm(dataset, ipc, budget):
        dsa = {"name": "dsa", "iterations": 1000, "init": "real", "augment": "auto", "time_budget_s": budget}
        dm = {"name": "dm", "iterations": 20000, "init": "real", "augment": "auto", "time_budget_s": budget}
        arms = {"dsa": {"filler": dsa}, "dsa_ref": {"filler": dsa, "evaluation": REF_DSA},
                "dm": {"filler": dm}, "dm_ref": {"filler": dm, "evaluation": REF_DSA}}
        return study(dataset, ipc, arms, [0, 1], "dm", f"DSA and DM on {dataset}, {ipc} image(s) per class.")

    def dm_only(dataset, ipcs, budget):
        dm = {"name": "dm", "iterations": 20000, "init": "real", "augment": "auto", "time_budget_s": budget}
        config = study(dataset, ipcs[0], {"dm": {"filler": dm}, "dm_ref": {"filler": dm, "evaluation": REF_DSA}},
                       [0], "dm", f"DM on {dataset} at {ipcs} images per class.")
        config["ipc"] = ipcs
        return config

    def mtt_dd():
        mtt = {"name": "mtt", "iterations": 5000, "experts": 5, "expert_epochs": 2, "max_start_epoch": 5,
               "syn_steps": 20, "augment": "auto", "time_budget_s": fit / 2}
        dd = {"name": "dd", "iterations": 400, "steps": 10, "epochs": 3, "time_budget_s": fit / 2}
        config = study("mnist", 1, {"mtt": {"filler": mtt}, "mtt_ref": {"filler": mtt, "evaluation": REF_DSA}},
                       [0], "mtt", "MTT (1/class) and DD (10/class) on MNIST.")
        return config, study("mnist", 10, {"dd": {"filler": dd}}, [0], "dd", "DD on MNIST, 10 images per class.")

    mtt, dd = mtt_dd()
    return {
        "mnist_ipc1_coresets": coresets("mnist", 1),
        "fashion_mnist_ipc1_coresets": coresets("fashion_mnist", 1),
        "mnist_ipc10_coresets": coresets("mnist", 10),
        "fashion_mnist_ipc10_coresets": coresets("fashion_mnist", 10),
        "mnist_ipc1_dc": dc("mnist", 1, [0, 1], fit / 2),
        "fashion_mnist_ipc1_dc": dc("fashion_mnist", 1, [0, 1], fit / 2),
        "mnist_ipc10_dc": dc("mnist", 10, [0], fit),
        "fashion_mnist_ipc10_dc": dc("fashion_mnist", 10, [0], fit),
        "mnist_ipc1_dsa_dm": dsa_dm("mnist", 1, fit / 4),
        "fashion_mnist_ipc1_dsa_dm": dsa_dm("fashion_mnist", 1, fit / 4),
        "mnist_dm_ipc10_50": dm_only("mnist", [10, 50], fit / 2),
        "fashion_mnist_dm_ipc10_50": dm_only("fashion_mnist", [10, 50], fit / 2),
        "mnist_ipc1_mtt": mtt,
        "mnist_ipc10_dd": dd,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seconds", type=float, required=True, help="wall budget of the whole job")
    parser.add_argument("--eval-nets", type=int, default=5)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--only", default=None, help="comma-separated study names (default: all)")
    args = parser.parse_args()
    deadline = time.time() + args.seconds
    configs = studies(args.seconds, args.eval_nets, args.device)
    if args.only:
        configs = {k: v for k, v in configs.items() if k in args.only.split(",")}
    (args.out / "configs").mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    procs = {}
    for name, config in configs.items():
        path = args.out / "configs" / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        log = (args.out / f"{name}.log").open("w")
        procs[name] = subprocess.Popen([sys.executable, "-m", "autometa.cli", "compare", str(path), "--out",
                                        str(args.out / name)], stdout=log, stderr=subprocess.STDOUT, env=env,
                                       start_new_session=True)
    while any(p.poll() is None for p in procs.values()) and time.time() < deadline:
        time.sleep(2)
    status = {}
    for name, p in procs.items():
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            status[name] = "stopped at the deadline"
        else:
            status[name] = f"exit {p.returncode}"
    (args.out / "status.json").write_text(json.dumps(status, indent=1))
    dirs = [str(args.out / name) for name in configs if (args.out / name / "runs.jsonl").exists()]
    if not dirs:
        print(json.dumps(status, indent=1), "\nno study finished a run")
        return
    subprocess.run([sys.executable, str(Path(__file__).parent.parent / "distillation_summary.py"), *dirs,
                    "--json", str(args.out / "summary.json")], stdout=(args.out / "summary.md").open("w"),
                   stderr=subprocess.STDOUT, env=env)
    print(json.dumps(status, indent=1))
    print((args.out / "summary.md").read_text())


if __name__ == "__main__":
    main()
