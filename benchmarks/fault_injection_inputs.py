"""Fault injection (issue #17, "Done when"): bad inputs to the API and CLI, and `kill -9` of training runs.

Part 1 runs each bad input in a fresh temporary directory: CLI cases as `python -m autometa.cli ...`
subprocesses (with a timeout), API cases in this process. Recorded per case: the exit code or
exception type, whether the message is one autometa error (CLI: one "autometa: error:" line block
and no traceback; API: the class derives from AutometaError), whether it names the bad value and a
fix, and whether any file that existed in the directory before changed (sha256 before/after).
Each case is classified as: clear error / accepted correctly / raw or misleading error /
silently accepted / overwrote something / hung.

Part 2 starts 3 `autometa run`s of a small sinusoid config (checkpoint every 5 steps), kills each
with SIGKILL at a random moment, resumes it with --resume, and compares results.json's test numbers
and the tensors of checkpoints/last.pt and best.pt bit-exactly with an uninterrupted run.

    python benchmarks/fault_injection_inputs.py --out benchmarks/fault_injection_inputs.json
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
DATA = os.environ.get("AUTOMETA_DATA", "/work/shared/data")
BASE = {
    "seed": 0,
    "tasks": {"name": "sinusoid", "shots": 5, "queries": 5},
    "model": {"name": "mlp", "hidden": [16, 16]},
    "learner": {"name": "maml", "inner_lr": 0.01, "inner_steps": 1, "eval_inner_steps": 2},
    "outer": {"optimizer": "adam", "lr": 0.001, "meta_batch": 4, "steps": 4},
    "run": {"validate_every": 2, "val_tasks": 8, "test_tasks": 8, "eval_batch": 8, "checkpoint_every": 1,
            "log_every": 1, "threads": 1, "progress": False},
}
SPACE = {"learner.inner_lr": {"float": [1e-3, 0.05], "log": True}}
FIX_WORDS = ("did you mean", "use ", "pass ", "choose", "set ", "lower", "remove", "run ", "--", "check",
             "one of", "expected", "must", "accepts", "give ", "delete", "rebuild", "download", "write", "try",
             "instead", "point", "either", "needs", "need ", "should", "supported", "known", "available", "swap",
             "among")


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def write_yaml(path: Path, data) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def cfg(t: Path, **patch) -> str:
    """The tiny base config with sections patched (section -> dict merged, or None to drop a key)."""
    config = json.loads(json.dumps(BASE))
    for key, value in patch.items():
        section, _, sub = key.partition("__")
        if sub:
            if value is None:
                config[section].pop(sub, None)
            else:
                config[section][sub] = value
        else:
            config[section] = value
    return str(write_yaml(t / "config.yaml", config))


def unquoted(path: str) -> str:
    """Write YAML's quoted '1e-3' as the bare number 1e-3 (what a user types)."""
    Path(path).write_text(Path(path).read_text().replace("'1e-3'", "1e-3"))
    return path


def with_env(**env):
    def call(fn):
        old = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            return fn()
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    return call


def sets(*items):
    return [arg for item in items for arg in ("--set", item)]


# ---------------------------------------------------------------- setups (t = the case's temp dir)
FINISHED: Path | None = None  # a finished tiny run, copied into cases that need one


def finished(t: Path) -> Path:
    shutil.copytree(FINISHED, t / "run")
    return t / "run"


def other_model(t: Path):
    r = finished(t)
    state = torch.load(r / "checkpoints" / "last.pt", weights_only=True)
    state["learner"] = {k: torch.zeros(3, 3) for k in state["learner"]}
    torch.save(state, r / "checkpoints" / "last.pt")


def sweep_dir(t: Path):
    (t / "sweep").mkdir()
    (t / "sweep" / "autometa.json").write_text(json.dumps({"kind": "sweep"}))
    (t / "sweep" / "sweep.json").write_text("{}")


def compare_dir(t: Path):
    (t / "cmp").mkdir()
    (t / "cmp" / "autometa.json").write_text(json.dumps({"kind": "compare"}))
    (t / "cmp" / "report.json").write_text("{}")


def npz(t: Path, name: str, how: str):
    (t / "data").mkdir(exist_ok=True)
    path = t / "data" / f"{name}.npz"
    if how == "flat":
        np.savez(path, x_train=np.zeros((50, 784), np.uint8), y_train=np.arange(50) % 10,
                 x_test=np.zeros((50, 784), np.uint8), y_test=np.arange(50) % 10)
    elif how == "garbage":
        path.write_bytes(b"this is not a zip file" * 10)
    elif how == "missing-keys":
        np.savez(path, images=np.zeros((50, 28, 28), np.uint8))
    elif how == "truncated":
        path.write_bytes((Path(DATA) / f"{name}.npz").read_bytes()[:5000])
    elif how == "labels-mismatch":
        np.savez(path, x_train=np.zeros((50, 28, 28), np.uint8), y_train=np.arange(40) % 10,
                 x_test=np.zeros((50, 28, 28), np.uint8), y_test=np.arange(50) % 10)


MNIST_TASKS = ["tasks={name: mnist, ways: 2, shots: 1, queries: 1, classes: {train: 5, val: 2, test: 3}}",
               "model={name: conv4, hidden: 4}"]


def compare_cfg(t: Path, slot="initialization", kind="learned", learner="maml", extra=None, drop=False) -> str:
    base = {k: BASE[k] for k in ("tasks", "model", "outer", "run")}
    config = {"seeds": [0], "comparisons": [{
        "name": "c", "slot": slot, "reference": "random", "base": base,
        "fillers": {"random": {"kind": "hand-crafted", "learner": {"name": "pretrained", "inner_lr": 0.01},
                               "outer": {"steps": 0}},
                    "maml": {"kind": kind, "learner": {"name": learner, "inner_lr": 0.01}}}}]}
    if extra:
        config["comparisons"][0].update(extra)
    if drop:
        config = {"seeds": [0]}
    return str(write_yaml(t / "compare.yaml", config))


def space(t: Path, data) -> str:
    return str(write_yaml(t / "space.yaml", data))


def sweep(t: Path, sp, *more):
    return ["sweep", cfg(t), "--space", space(t, sp), "--trials", "2", "--out", str(t / "sw"), *more]


# ---------------------------------------------------------------- CLI cases
# (id, argv(t), setup(t) or None, fragment the message must name, expected: "error" | "accept", env patch)
def run_cli(t, *more, **patch):
    return ["run", cfg(t, **patch), "--out", str(t / "out"), *more]


CLI = [
    # typos in every section, with did-you-mean
    ("typo-tasks", lambda t: run_cli(t, *sets("tasks.shot=5")), None, "shot", "error"),
    ("typo-model", lambda t: run_cli(t, *sets("model.hiden=[10]")), None, "hiden", "error"),
    ("typo-learner", lambda t: run_cli(t, *sets("learner.inner_lrr=0.1")), None, "inner_lrr", "error"),
    ("typo-outer", lambda t: run_cli(t, *sets("outer.lrr=0.1")), None, "lrr", "error"),
    ("typo-run", lambda t: run_cli(t, *sets("run.checkpoint_evry=2")), None, "checkpoint_evry", "error"),
    ("typo-top-level", lambda t: run_cli(t, *sets("seeed=1")), None, "seeed", "error"),
    ("typo-section", lambda t: run_cli(t, *sets("lerner.inner_lr=0.1")), None, "lerner", "error"),
    ("unknown-learner", lambda t: run_cli(t, *sets("learner.name=mamll")), None, "mamll", "error"),
    ("unknown-tasks", lambda t: run_cli(t, *sets("tasks.name=sinusiod")), None, "sinusiod", "error"),
    ("unknown-model", lambda t: run_cli(t, *sets("model.name=mlpp")), None, "mlpp", "error"),
    ("unknown-outer-optimizer", lambda t: run_cli(t, *sets("outer.optimizer=adamm")), None, "adamm", "error"),
    # wrong types
    ("type-outer-lr-text", lambda t: run_cli(t, *sets("outer.lr=abc")), None, "abc", "error"),
    ("type-hidden-text", lambda t: run_cli(t, *sets("model.hidden=abc")), None, "abc", "error"),
    ("type-shots-float", lambda t: run_cli(t, *sets("tasks.shots=2.5")), None, "2.5", "error"),
    ("type-inner-steps-float", lambda t: run_cli(t, *sets("learner.inner_steps=1.5")), None, "1.5", "error"),
    ("type-seed-text", lambda t: run_cli(t, *sets("seed=abc")), None, "abc", "error"),
    ("type-steps-list", lambda t: run_cli(t, *sets("outer.steps=[1,2]")), None, "outer.steps", "error"),
    ("type-section-scalar", lambda t: run_cli(t, *sets("learner=5")), None, "learner", "error"),
    ("type-progress-text", lambda t: run_cli(t, *sets("run.progress=maybe")), None, "maybe", "error"),
    # negative / zero numbers
    ("neg-outer-lr", lambda t: run_cli(t, *sets("outer.lr=-0.1")), None, "-0.1", "error"),
    ("zero-outer-lr", lambda t: run_cli(t, *sets("outer.lr=0")), None, "outer.lr", "error"),
    ("neg-outer-steps", lambda t: run_cli(t, *sets("outer.steps=-5")), None, "-5", "error"),
    ("zero-meta-batch", lambda t: run_cli(t, *sets("outer.meta_batch=0")), None, "meta_batch", "error"),
    ("neg-inner-steps", lambda t: run_cli(t, *sets("learner.inner_steps=-1")), None, "-1", "error"),
    ("neg-inner-lr", lambda t: run_cli(t, *sets("learner.inner_lr=-0.01")), None, "-0.01", "error"),
    ("zero-shots", lambda t: run_cli(t, *sets("tasks.shots=0")), None, "shots", "error"),
    ("neg-queries", lambda t: run_cli(t, *sets("tasks.queries=-3")), None, "-3", "error"),
    ("neg-hidden", lambda t: run_cli(t, *sets("model.hidden=[-4]")), None, "-4", "error"),
    ("zero-val-tasks", lambda t: run_cli(t, *sets("run.val_tasks=0")), None, "val_tasks", "error"),
    ("neg-eval-batch", lambda t: run_cli(t, *sets("run.eval_batch=-1")), None, "eval_batch", "error"),
    ("zero-threads", lambda t: run_cli(t, *sets("run.threads=0")), None, "threads", "error"),
    ("device-banana", lambda t: run_cli(t, *sets("run.device=banana")), None, "banana", "error"),
    # impossible ways / shots for the split
    ("ways-over-split-omniglot", lambda t: run_cli(t, *sets(
        "tasks={name: omniglot, ways: 5000, shots: 1, queries: 1}", "model={name: conv4, hidden: 4}")),
     None, "5000", "error"),
    ("ways-over-split-mnist", lambda t: run_cli(t, *sets(
        "tasks={name: mnist, ways: 8, shots: 1, queries: 1, classes: {train: 5, val: 2, test: 3}}",
        "model={name: conv4, hidden: 4}")), None, "8", "error"),
    ("shots-over-class-omniglot", lambda t: run_cli(t, *sets(
        "tasks={name: omniglot, ways: 5, shots: 19, queries: 5}", "model={name: conv4, hidden: 4}")),
     None, "24", "error"),
    # YAML numbers like 1e-3 must be accepted
    ("accept-outer-lr-1e-3", lambda t: run_cli(t, *sets("outer.lr=1e-3")), None, "", "accept"),
    ("accept-inner-lr-1e-2", lambda t: run_cli(t, *sets("learner.inner_lr=1e-2")), None, "", "accept"),
    ("accept-outer-lr-5E-4", lambda t: run_cli(t, *sets("outer.lr=5E-4")), None, "", "accept"),
    ("accept-1e-3-in-file", lambda t: ["run", unquoted(cfg(t, outer__lr="1e-3")), "--out", str(t / "out")], None,
     "", "accept"),
    # fillers, estimators, learn groups
    ("inner-lr-and-optimizer", lambda t: run_cli(t, *sets("learner.optimizer={name: sgd, lr: 0.1}")), None,
     "optimizer", "error"),
    ("unknown-optimizer-filler", lambda t: ["run", cfg(t, learner__inner_lr=None,
                                                       learner__optimizer={"name": "sgdd", "lr": 0.1}),
                                            "--out", str(t / "out")], None, "sgdd", "error"),
    ("optimizer-filler-typo-key", lambda t: ["run", cfg(t, learner__inner_lr=None,
                                                        learner__optimizer={"name": "sgd", "lrr": 0.1}),
                                             "--out", str(t / "out")], None, "lrr", "error"),
    ("unknown-loss-filler", lambda t: run_cli(t, *sets("learner.loss={name: msee}")), None, "msee", "error"),
    ("unknown-estimator", lambda t: run_cli(t, *sets("learner.estimator=unrolld")), None, "unrolld", "error"),
    ("learn-group-without-meta-params", lambda t: run_cli(t, *sets("learner.learn=[loss]")), None, "loss",
     "error"),
    ("learn-unknown-group", lambda t: run_cli(t, *sets("learner.learn=[inits]")), None, "inits", "error"),
    # config files and the command line itself
    ("config-is-a-directory", lambda t: ["run", str(t), "--out", str(t / "out")], None, "directory", "error"),
    ("config-missing", lambda t: ["run", str(t / "nope.yaml"), "--out", str(t / "out")], None, "nope.yaml",
     "error"),
    ("config-empty", lambda t: ["run", str(t / "e.yaml"), "--out", str(t / "out")],
     lambda t: (t / "e.yaml").write_text(""), "e.yaml", "error"),
    ("config-malformed-yaml", lambda t: ["run", str(t / "m.yaml"), "--out", str(t / "out")],
     lambda t: (t / "m.yaml").write_text("tasks: [1, 2\nmodel: {"), "m.yaml", "error"),
    ("config-is-a-list", lambda t: ["run", str(t / "l.yaml"), "--out", str(t / "out")],
     lambda t: (t / "l.yaml").write_text("- 1\n- 2\n"), "l.yaml", "error"),
    ("set-without-equals", lambda t: run_cli(t, "--set", "outer.lr"), None, "outer.lr", "error"),
    ("set-malformed-value", lambda t: run_cli(t, *sets("model.hidden=[1,")), None, "model.hidden", "error"),
    ("plugin-missing", lambda t: run_cli(t, "--plugin", str(t / "missing.py")), None, "missing.py", "error"),
    ("plugin-syntax-error", lambda t: run_cli(t, "--plugin", str(t / "bad.py")),
     lambda t: (t / "bad.py").write_text("def f(:\n"), "bad.py", "error"),
    ("plugin-raises", lambda t: run_cli(t, "--plugin", str(t / "boom.py")),
     lambda t: (t / "boom.py").write_text("raise RuntimeError('boom')\n"), "boom.py", "error"),
    # results directories
    ("run-out-at-a-file", lambda t: ["run", cfg(t), "--out", str(t / "f.txt")],
     lambda t: (t / "f.txt").write_text("keep me"), "f.txt", "error"),
    ("run-out-at-a-sweep", lambda t: ["run", cfg(t), "--out", str(t / "sweep")], sweep_dir, "sweep", "error"),
    ("run-out-at-a-compare", lambda t: ["run", cfg(t), "--out", str(t / "cmp")], compare_dir, "cmp", "error"),
    ("run-out-at-finished-run", lambda t: ["run", cfg(t), "--out", str(t / "run")], finished, "run", "error"),
    ("run-out-at-foreign-dir", lambda t: ["run", cfg(t), "--out", str(t / "mine")],
     lambda t: ((t / "mine").mkdir(), (t / "mine" / "thesis.tex").write_text("x")), "mine", "error"),
    ("resume-other-model", lambda t: ["run", "--out", str(t / "run"), "--resume"], other_model, "last.pt",
     "error"),
    ("resume-not-a-checkpoint", lambda t: ["run", "--out", str(t / "run"), "--resume"],
     lambda t: torch.save({"a": 1}, finished(t) / "checkpoints" / "last.pt"), "last.pt", "error"),
    ("resume-truncated-checkpoint", lambda t: ["run", "--out", str(t / "run"), "--resume"],
     lambda t: (finished(t) / "checkpoints" / "last.pt").write_bytes(
         (FINISHED / "checkpoints" / "last.pt").read_bytes()[:100]), "last.pt", "error"),
    ("resume-empty-checkpoint", lambda t: ["run", "--out", str(t / "run"), "--resume"],
     lambda t: (finished(t) / "checkpoints" / "last.pt").write_bytes(b""), "last.pt", "error"),
    ("resume-pickle-payload", lambda t: ["run", "--out", str(t / "run"), "--resume"],
     lambda t: torch.save({"learner": object()}, finished(t) / "checkpoints" / "last.pt",
                          _use_new_zipfile_serialization=True), "last.pt", "error"),
    ("resume-changing-fixed-key", lambda t: ["run", "--out", str(t / "run"), "--resume",
                                             *sets("learner.inner_lr=0.5")], finished, "inner_lr", "error"),
    ("resume-and-overwrite", lambda t: ["run", "--out", str(t / "run"), "--resume", "--overwrite"], finished,
     "--overwrite", "error"),
    ("resume-empty-dir", lambda t: ["run", "--out", str(t / "empty"), "--resume"],
     lambda t: (t / "empty").mkdir(), "empty", "error"),
    ("resume-missing-dir", lambda t: ["run", "--out", str(t / "nowhere"), "--resume"], None, "nowhere", "error"),
    ("resume-without-out", lambda t: ["run", cfg(t), "--resume"], None, "--out", "error"),
    ("evaluate-other-model", lambda t: ["evaluate", str(t / "run"), "--checkpoint", "last.pt"], other_model,
     "last.pt", "error"),
    ("evaluate-missing-checkpoint", lambda t: ["evaluate", str(t / "run"), "--checkpoint", "nope.pt"], finished,
     "nope.pt", "error"),
    ("evaluate-not-a-run", lambda t: ["evaluate", str(t)], None, "evaluate-not-a-run", "error"),
    ("evaluate-out-exists", lambda t: ["evaluate", str(t / "run"), "--out", str(t / "run" / "results.json")],
     finished, "results.json", "error"),
    # divergence
    ("diverge-inner-lr", lambda t: run_cli(t, *sets("learner.inner_lr=1000000.0")), None, "inner_lr", "error"),
    ("diverge-sgd-outer-lr", lambda t: run_cli(t, *sets("outer.optimizer=sgd", "outer.lr=1e10")), None,
     "outer.lr", "error"),
    # data files
    ("data-missing", lambda t: run_cli(t, *sets(*MNIST_TASKS)), lambda t: (t / "data").mkdir(), "mnist",
     "error", "empty-data"),
    ("data-omniglot-missing", lambda t: run_cli(t, *sets("tasks={name: omniglot, ways: 2, shots: 1, queries: 1}",
                                                         "model={name: conv4, hidden: 4}")),
     lambda t: (t / "data").mkdir(), "omniglot", "error", "empty-data"),
    ("npz-flat-images", lambda t: run_cli(t, *sets(*MNIST_TASKS)), lambda t: npz(t, "mnist", "flat"),
     "mnist.npz", "error", "data"),
    ("npz-not-a-zip", lambda t: run_cli(t, *sets(*MNIST_TASKS)), lambda t: npz(t, "mnist", "garbage"),
     "mnist.npz", "error", "data"),
    ("npz-missing-keys", lambda t: run_cli(t, *sets(*MNIST_TASKS)), lambda t: npz(t, "mnist", "missing-keys"),
     "mnist.npz", "error", "data"),
    ("npz-truncated", lambda t: run_cli(t, *sets(*MNIST_TASKS)), lambda t: npz(t, "mnist", "truncated"),
     "mnist.npz", "error", "data"),
    ("npz-labels-mismatch", lambda t: run_cli(t, *sets(*MNIST_TASKS)),
     lambda t: npz(t, "mnist", "labels-mismatch"), "mnist.npz", "error", "data"),
    # compare configs
    ("compare-bad-slot", lambda t: ["compare", compare_cfg(t, slot="initializaton"), "--out", str(t / "c")],
     None, "initializaton", "error"),
    ("compare-bad-slot-part", lambda t: ["compare", compare_cfg(t, slot="initialization and embeding"), "--out",
                                         str(t / "c")], None, "embeding", "error"),
    ("compare-bad-kind", lambda t: ["compare", compare_cfg(t, kind="lerned"), "--out", str(t / "c")], None,
     "lerned", "error"),
    ("compare-bad-learner", lambda t: ["compare", compare_cfg(t, learner="mamll"), "--out", str(t / "c")], None,
     "mamll", "error"),
    ("compare-bad-reference", lambda t: ["compare", compare_cfg(t, extra={"reference": "randm"}), "--out",
                                         str(t / "c")], None, "randm", "error"),
    ("compare-no-comparisons", lambda t: ["compare", compare_cfg(t, drop=True), "--out", str(t / "c")], None,
     "comparisons", "error"),
    ("compare-out-at-run", lambda t: ["compare", compare_cfg(t), "--out", str(t / "run")], finished, "run",
     "error"),
    ("compare-plugin-missing", lambda t: ["compare", compare_cfg(t), "--out", str(t / "c"), "--plugin",
                                          str(t / "missing.py")], None, "missing.py", "error"),
    # search spaces and sweeps
    ("space-low-over-high", lambda t: sweep(t, {"learner.inner_lr": {"float": [0.1, 0.001]}}), None, "0.1",
     "error"),
    ("space-unknown-distribution", lambda t: sweep(t, {"learner.inner_lr": {"flaot": [0.001, 0.1]}}), None,
     "flaot", "error"),
    ("space-empty-choice", lambda t: sweep(t, {"learner.inner_steps": {"choice": []}}), None, "choice", "error"),
    ("space-unknown-key", lambda t: sweep(t, {"learner.inner_lrr": {"float": [0.001, 0.1]}}), None, "inner_lrr",
     "error"),
    ("space-log-nonpositive", lambda t: sweep(t, {"learner.inner_lr": {"float": [0.0, 0.1], "log": True}}), None,
     "log", "error"),
    ("sweep-unknown-metric", lambda t: sweep(t, SPACE, "--metric", "test.acuracy"), None, "test.acuracy",
     "error"),
    ("sweep-zero-trials", lambda t: sweep(t, SPACE)[:4] + ["--trials", "0", "--out", str(t / "sw")], None,
     "trials", "error"),
    ("sweep-unknown-sampler", lambda t: sweep(t, SPACE, "--sampler", "tpee"), None, "tpee", "error"),
    ("sweep-nni-unknown-sampler", lambda t: sweep(t, SPACE, "--backend", "nni", "--sampler", "tpee"), None,
     "tpee", "error"),
    ("sweep-out-at-run", lambda t: sweep(t, SPACE)[:-2] + ["--out", str(t / "run")], finished, "run", "error"),
    ("sweep-out-at-file", lambda t: sweep(t, SPACE)[:-2] + ["--out", str(t / "f.txt")],
     lambda t: (t / "f.txt").write_text("keep me"), "f.txt", "error"),
    ("sweep-out-at-sweep", lambda t: sweep(t, SPACE)[:-2] + ["--out", str(t / "sweep")], sweep_dir, "sweep",
     "error"),
    ("sweep-ray-unreachable", lambda t: sweep(t, SPACE, "--backend", "ray", "--address", "127.0.0.1:1",
                                              "--connect-timeout", "5"), None, "127.0.0.1:1", "error"),
    ("sweep-plugin-missing", lambda t: sweep(t, SPACE, "--plugin", str(t / "missing.py")), None, "missing.py",
     "error"),
]


# ---------------------------------------------------------------- API cases (in this process)
def _maml(**kw):
    from torch import nn

    from autometa.learners import MAML

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(1, 8), nn.ReLU(), nn.Linear(8, 1))
    return MAML(net, **{"inner_lr": 0.05, "task": "regression", **kw})


def _conv_maml():
    from torch import nn

    from autometa.learners import MAML

    torch.manual_seed(0)
    return MAML(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(64, 2)), inner_lr=0.05)


def _embedding_maml():
    from torch import nn

    from autometa.learners import MAML

    class Bag(nn.Module):  # integer token ids are legitimate inputs for an embedding network
        def __init__(self):
            super().__init__()
            self.embed, self.head = nn.Embedding(10, 4), nn.Linear(4, 1)

        def forward(self, x):
            return self.head(self.embed(x).mean(-2))

    torch.manual_seed(0)
    return MAML(Bag(), inner_lr=0.05, task="regression")


def _batch(b=2, n=5, d=1):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(b, n, d, generator=g)
    return x, torch.sin(x[..., :1]), x.clone(), torch.sin(x[..., :1])


def api_lstm(t: Path, how: str):
    from autometa.slots.optimizer._lstm import LSTMOptimizer

    path = t / "opt.pt"
    if how == "pickle":
        torch.save({"evil": object()}, path)
    elif how == "truncated":
        LSTMOptimizer().save(path)
        path.write_bytes(path.read_bytes()[:80])
    elif how == "missing":
        pass
    LSTMOptimizer.load(path)


def api_run(t: Path, **patch):
    from autometa.experiment import run_experiment

    config = json.loads(json.dumps(BASE))
    for key, value in patch.items():
        section, _, sub = key.partition("__")
        config[section][sub] = value
    return run_experiment(config, t / "out")


def api_search(t: Path, sp, **kw):
    import autometa

    config = json.loads(json.dumps(BASE))
    return autometa.search(config, sp, n_trials=2, out_dir=t / "sw", **kw)


def api_compare(t: Path, **kw):
    import autometa

    return autometa.compare(compare_cfg(t, **kw), out_dir=t / "c", progress=False, render=False, quiet=True)


API = [
    ("api-maml-neg-inner-lr", lambda t: _maml(inner_lr=-1.0), "-1.0", "error"),
    ("api-maml-unknown-task", lambda t: _maml(task="regresion"), "regresion", "error"),
    ("api-maml-unknown-batching", lambda t: _maml(batching="vmapp"), "vmapp", "error"),
    ("api-maml-unknown-estimator", lambda t: _maml(estimator="unrolld"), "unrolld", "error"),
    ("api-maml-inner-lr-and-optimizer", lambda t: _maml(optimizer="sgd"), "optimizer", "error"),
    ("api-maml-learn-unknown", lambda t: _maml(learn=["inits"]), "inits", "error"),
    ("api-maml-learn-loss-without-params", lambda t: _maml(learn=["loss"]), "loss", "error"),
    ("api-tuple-of-3", lambda t: _maml().meta_backward(_batch()[:3]), "3", "error"),
    ("api-targets-wrong-shape", lambda t: _maml().meta_backward(
        tuple(v.squeeze(-1) if i % 2 else v for i, v in enumerate(_batch()))), "shape", "error"),
    ("api-int-inputs", lambda t: _maml().meta_backward(
        (torch.ones(2, 5, 1, dtype=torch.long),) + _batch()[1:]), "int64", "error"),
    ("api-no-task-dim", lambda t: _maml().meta_backward(tuple(v[0] for v in _batch())), "task", "error"),
    ("api-task-count-mismatch", lambda t: _maml().meta_backward(
        (_batch(b=2)[0], _batch(b=2)[1], _batch(b=3)[2], _batch(b=3)[3])), "2", "error"),
    ("api-feature-dim-mismatch", lambda t: _maml().meta_backward(_batch(d=3)), "3", "error"),
    ("api-conv-channels-mismatch", lambda t: _conv_maml().meta_backward(
        (torch.randn(2, 4, 1, 6, 6), torch.arange(2).repeat(2, 2), torch.randn(2, 4, 1, 6, 6),
         torch.arange(2).repeat(2, 2))), "channels", "error"),
    ("api-embedding-ids-out-of-range", lambda t: _embedding_maml().meta_backward(
        (torch.randint(10, 20, (2, 5, 3)), torch.randn(2, 5, 1), torch.randint(0, 10, (2, 5, 3)),
         torch.randn(2, 5, 1))), "10", "error"),
    ("api-embedding-integer-ids", lambda t: _embedding_maml().meta_backward(
        (torch.randint(0, 10, (2, 5, 3)), torch.randn(2, 5, 1), torch.randint(0, 10, (2, 5, 3)),
         torch.randn(2, 5, 1))), "", "accept"),
    ("api-float-targets-classification", lambda t: _maml(task="classification").meta_backward(_batch()),
     "float", "error"),
    ("api-build-learner-unknown", lambda t: __import__("autometa.learners", fromlist=["x"]).build_learner(
        {"name": "mamll"}, torch.nn.Linear(1, 1), "regression"), "mamll", "error"),
    ("api-run-typo", lambda t: api_run(t, learner__inner_lrr=0.1), "inner_lrr", "error"),
    ("api-run-neg-steps", lambda t: api_run(t, outer__steps=-1), "-1", "error"),
    ("api-run-lr-string", lambda t: api_run(t, outer__lr="1e-3"), "1e-3", "error"),  # a str in a dict
    ("api-run-lr-float-1e-3", lambda t: api_run(t, outer__lr=1e-3), "", "accept"),
    ("api-run-diverge", lambda t: api_run(t, learner__inner_lr=1e6), "inner_lr", "error"),
    ("api-search-low-over-high", lambda t: api_search(t, {"learner.inner_lr": {"float": [0.1, 0.001]}}), "0.1",
     "error"),
    ("api-search-unknown-backend", lambda t: api_search(t, SPACE, backend="optuan"), "optuan", "error"),
    ("api-search-unknown-metric", lambda t: api_search(t, SPACE, metric="test.acuracy"), "test.acuracy",
     "error"),
    ("api-compare-bad-slot", lambda t: api_compare(t, slot="initializaton"), "initializaton", "error"),
    ("api-compare-bad-kind", lambda t: api_compare(t, kind="lerned"), "lerned", "error"),
    ("api-lstm-load-pickle", lambda t: api_lstm(t, "pickle"), "opt.pt", "error"),
    ("api-lstm-load-truncated", lambda t: api_lstm(t, "truncated"), "opt.pt", "error"),
    ("api-lstm-load-missing", lambda t: api_lstm(t, "missing"), "opt.pt", "error"),
    ("api-load-checkpoint-garbage", lambda t: (t.joinpath("g.pt").write_bytes(b"garbage"),
                                               __import__("autometa.experiment._run", fromlist=["x"])
                                               .load_checkpoint(t / "g.pt")), "g.pt", "error"),
    ("api-load-mnist-flat", lambda t: (npz(t, "mnist", "flat"), __import__("autometa.data", fromlist=["x"])
                                       .load_mnist(root=t / "data")), "mnist.npz", "error"),
    ("api-load-omniglot-missing", lambda t: with_env(AUTOMETA_DATA=str(t), HOME=str(t))(
        lambda: __import__("autometa.data", fromlist=["x"]).load_omniglot(root=t)),
     "omniglot", "error"),
]


def has_fix(message: str) -> bool:
    low = message.lower()
    return any(w in low for w in FIX_WORDS)


def classify(expected: str, failed: bool, one_autometa: bool, names: bool, fix: bool, changed: list,
             hung: bool, claims_success: bool) -> str:
    if hung:
        return "hung"
    if changed:
        return "overwrote something"
    if expected == "accept":
        return "accepted correctly" if not failed else "raw or misleading error"
    if not failed or claims_success:
        return "silently accepted"
    return "clear error" if (one_autometa and names and fix) else "raw or misleading error"


def run_cli_case(case, folder: Path, timeout: float) -> dict:
    name, argv, setup, fragment, expected, *env_kind = case
    t = folder / name
    t.mkdir()
    if setup is not None:
        setup(t)
    args = argv(t)
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_WAIT_POLICY="PASSIVE", AUTOMETA_DATA=DATA)
    if env_kind:
        env["AUTOMETA_DATA"] = str(t / "data")
    before = snapshot(t)
    start = time.monotonic()
    hung = False
    try:
        proc = subprocess.run([sys.executable, "-m", "autometa.cli", *args], cwd=t, env=env, capture_output=True,
                              text=True, timeout=timeout, start_new_session=True)
        rc, err = proc.returncode, proc.stderr
    except subprocess.TimeoutExpired as exc:
        hung, rc, err = True, None, (exc.stderr or b"").decode(errors="replace") if isinstance(exc.stderr, bytes) \
            else (exc.stderr or "")
    wall = time.monotonic() - start
    after = snapshot(t)
    changed = sorted(k for k, v in before.items() if after.get(k) != v)
    # a top-level result file claims success; a sub-run's results.json (compare fillers) is recorded separately
    new_results = [k for k in set(after) - set(before) if k.endswith(("results.json", "sweep.json", "report.json"))]
    top_results = [k for k in new_results if len(Path(k).parts) <= 2]
    message = err.strip()
    if "autometa: error:" in message:  # progress bars (tqdm) may precede it on stderr
        message = message[message.index("autometa: error:"):]
    one = rc == 2 and "Traceback" not in err and message.count("autometa: error:") == 1
    failed = rc not in (0, None)
    names = (fragment in message) if fragment else True
    fix = has_fix(message.removeprefix("autometa: error:"))
    verdict = classify(expected, failed, one, names, fix, changed, hung,
                       claims_success=expected == "error" and bool(top_results))
    return {"case": name, "via": "cli", "argv": ["autometa", *[a.replace(str(t), "$T") for a in args]],
            "expected": expected, "exit_code": rc, "one_autometa_error": one, "names_value": names,
            "names_fix": fix, "changed_files": changed, "new_result_files": sorted(new_results),
            "wall_s": round(wall, 1), "verdict": verdict,
            "message": message.replace(str(t), "$T")[-1500:]}


def run_api_case(case, folder: Path) -> dict:
    from autometa.errors import AutometaError

    name, fn, fragment, expected = case
    t = folder / name
    t.mkdir()
    before = snapshot(t)
    start = time.monotonic()
    exc_type, message, one = None, "", False
    try:
        fn(t)
        failed = False
    except Exception as exc:  # recording whatever the API raised is the point
        failed = True
        exc_type = f"{type(exc).__module__}.{type(exc).__qualname__}"
        one = isinstance(exc, AutometaError)
        message = str(exc) if one else "".join(traceback.format_exception_only(exc)).strip()
    after = snapshot(t)
    changed = sorted(k for k, v in before.items() if after.get(k) != v)
    names = (fragment in message) if fragment else True
    verdict = classify(expected, failed, one, names, has_fix(message), changed, False, False)
    return {"case": name, "via": "api", "expected": expected, "exception": exc_type, "one_autometa_error": one,
            "names_value": names, "names_fix": has_fix(message), "changed_files": changed,
            "wall_s": round(time.monotonic() - start, 1), "verdict": verdict,
            "message": message.replace(str(t), "$T")[-1500:]}


# ---------------------------------------------------------------- part 2: kill -9 and resume
KILL_SETS = ["outer.steps=400", "outer.meta_batch=4", "run.validate_every=25", "run.val_tasks=16",
             "run.test_tasks=32", "run.eval_batch=16", "run.checkpoint_every=5", "run.log_every=10"]


def cli(args, cwd, timeout=600):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_WAIT_POLICY="PASSIVE", AUTOMETA_DATA=DATA)
    return subprocess.Popen([sys.executable, "-m", "autometa.cli", *args], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)


def tensors(path: Path) -> dict:
    state = torch.load(path, weights_only=True)
    flat = {}

    def walk(prefix, value):
        if isinstance(value, torch.Tensor):
            flat[prefix] = value
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}", v)
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                walk(f"{prefix}.{i}", v)
    walk("", state)
    return flat


def same_tensors(a: Path, b: Path) -> tuple[bool, list]:
    ta, tb = tensors(a), tensors(b)
    differ = sorted(k for k in set(ta) | set(tb)
                    if k not in ta or k not in tb or ta[k].shape != tb[k].shape or ta[k].dtype != tb[k].dtype
                    or not torch.equal(ta[k], tb[k]))
    return not differ, differ


def kill_runs(folder: Path, runs: int, rng: random.Random) -> dict:
    config = cfg(folder)
    ref = folder / "reference"
    start = time.monotonic()
    p = cli(["run", config, "--out", str(ref), *sets(*KILL_SETS)], folder)
    _, err = p.communicate()
    ref_wall = time.monotonic() - start
    if p.returncode != 0:
        return {"error": f"reference run failed: {err[-2000:]}"}
    ref_test = json.loads((ref / "results.json").read_text())["test"]
    records = []
    for i in range(runs):
        out = folder / f"killed{i}"
        delay = rng.uniform(3.0, max(4.0, 0.85 * ref_wall))
        p = cli(["run", config, "--out", str(out), *sets(*KILL_SETS)], folder)
        time.sleep(delay)
        alive = p.poll() is None
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        ckpts = sorted(x.name for x in (out / "checkpoints").glob("*")) if (out / "checkpoints").exists() else []
        step_at_kill = None
        if (out / "checkpoints" / "last.pt").exists():
            try:
                step_at_kill = torch.load(out / "checkpoints" / "last.pt", weights_only=True).get("step")
            except Exception as exc:  # a damaged file is what is recorded
                step_at_kill = f"unreadable: {type(exc).__name__}"
        r = cli(["run", "--out", str(out), "--resume"], folder)
        _, rerr = r.communicate()
        rec = {"run": i, "kill_after_s": round(delay, 2), "alive_at_kill": alive, "checkpoints_at_kill": ckpts,
               "last_step_at_kill": step_at_kill if not isinstance(step_at_kill, torch.Tensor)
               else int(step_at_kill), "resume_exit_code": r.returncode, "resume_stderr": rerr[-800:]}
        if r.returncode == 0:
            test = json.loads((out / "results.json").read_text())["test"]
            rec["results_test_equal"] = test == ref_test
            rec["last_pt_equal"], rec["last_pt_differ"] = same_tensors(out / "checkpoints" / "last.pt",
                                                                       ref / "checkpoints" / "last.pt")
            rec["best_pt_equal"], rec["best_pt_differ"] = same_tensors(out / "checkpoints" / "best.pt",
                                                                       ref / "checkpoints" / "best.pt")
            rec["resumed_from_step"] = json.loads((out / "results.json").read_text()).get("resumed_from_step")
            rec["bit_exact"] = rec["results_test_equal"] and rec["last_pt_equal"] and rec["best_pt_equal"]
        else:
            rec["bit_exact"] = False
        records.append(rec)
    return {"config_overrides": KILL_SETS, "reference_wall_s": round(ref_wall, 1), "reference_test": ref_test,
            "runs": records, "bit_exact": sum(r["bit_exact"] for r in records), "of": len(records)}


def main() -> None:
    global FINISHED
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "fault_injection_inputs.json"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=120.0, help="per CLI case; past it: 'hung'")
    parser.add_argument("--kill-runs", type=int, default=3)
    parser.add_argument("--only", default="", help="comma-separated case names (debugging)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    only = set(filter(None, args.only.split(",")))
    started, load_at_start = time.time(), os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="autometa-faults-") as tmp:
        folder = Path(tmp)
        (folder / "base").mkdir()
        FINISHED = folder / "base" / "run"
        p = cli(["run", cfg(folder / "base"), "--out", str(FINISHED)], folder / "base")
        _, err = p.communicate()
        assert p.returncode == 0, err  # the tiny base run itself must work
        (folder / "cli").mkdir()
        (folder / "api").mkdir()
        cli_cases = [c for c in CLI if not only or c[0] in only]
        api_cases = [c for c in API if not only or c[0] in only]
        with concurrent.futures.ThreadPoolExecutor(args.workers) as pool:
            futures = [pool.submit(run_cli_case, c, folder / "cli", args.timeout) for c in cli_cases]
            api_rows = [run_api_case(c, folder / "api") for c in api_cases]
            rows = [f.result() for f in futures] + api_rows
        kills = None
        if args.kill_runs and not only:
            (folder / "kills").mkdir()
            kills = kill_runs(folder / "kills", args.kill_runs, rng)
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["verdict"]] = counts.get(row["verdict"], 0) + 1
    width = max(len(r["case"]) for r in rows)
    print(f"{'case':<{width}}  via  code/exception             verdict")
    for row in rows:
        code = row.get("exit_code") if row["via"] == "cli" else (row.get("exception") or "-")
        print(f"{row['case']:<{width}}  {row['via']:<4} {str(code)[-26:]:<26} {row['verdict']}")
    print("\nverdicts:", json.dumps(counts))
    print(f"bad inputs (expected errors): {sum(r['expected'] == 'error' for r in rows)}, "
          f"acceptance checks: {sum(r['expected'] == 'accept' for r in rows)}")
    if kills:
        print(f"kill -9 + --resume: {kills.get('bit_exact')} of {kills.get('of')} bit-exact "
              f"(reference run {kills.get('reference_wall_s')} s)", kills.get("error", ""))
        for r in kills.get("runs", []):
            print(f"  run {r['run']}: killed after {r['kill_after_s']} s at checkpoint step "
                  f"{r['last_step_at_kill']}, resume exit {r['resume_exit_code']}, bit-exact {r['bit_exact']}")
    load = os.getloadavg()
    result = {"command": " ".join(["python", *sys.argv]), "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
              "wall_s": round(time.time() - started, 1), "loadavg_at_start": load_at_start, "loadavg_at_end": load,
              "cpus": os.cpu_count(), "torch": torch.__version__, "verdicts": counts, "cases": rows,
              "kill_resume": kills}
    if not only:
        Path(args.out).write_text(json.dumps(result, indent=1, default=str) + "\n")
        print("written", args.out)


if __name__ == "__main__":
    main()
