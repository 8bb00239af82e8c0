"""Issue #17's bad inputs to `autometa run` / `evaluate`: one clear autometa error each, nothing lost.

Each case starts from a finished tiny run (sinusoid MAML, a few steps), runs the CLI command
the issue lists, and checks the error's type, that its message names the bad value and the
fix, and that no file already in the results directory changed.
"""

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from autometa.cli import build_parser, main
from autometa.errors import (
    AutometaError,
    CheckpointError,
    ConfigError,
    DataIntegrityError,
    NumericalError,
    ResultsDirError,
)

CONFIG = Path(__file__).resolve().parents[1] / "experiments" / "sinusoid_maml_k10.yaml"
TINY = ["outer.steps=4", "outer.meta_batch=4", "run.validate_every=2", "run.val_tasks=10", "run.test_tasks=10",
        "run.eval_batch=10", "run.checkpoint_every=1", "run.log_every=1", "run.progress=false",
        "learner.eval_inner_steps=2"]


def sets(items):
    return [arg for item in items for arg in ("--set", item)]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("finished") / "run"
    assert main(["run", str(CONFIG), "--out", str(out), *sets(TINY)]) == 0
    return out


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def other_model_checkpoint(run: Path) -> None:
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    state["learner"] = {k: torch.zeros(3, 3) for k in state["learner"]}  # another model's shapes
    torch.save(state, run / "checkpoints" / "last.pt")


def sweep_folder(folder: Path) -> None:
    folder.mkdir()
    (folder / "autometa.json").write_text(json.dumps({"kind": "sweep"}))
    (folder / "sweep.json").write_text("{}")


def mnist_with_flat_images(folder: Path) -> None:
    np.savez(folder / "mnist.npz", x_train=np.zeros((50, 784), np.uint8), y_train=np.arange(50) % 10,
             x_test=np.zeros((50, 784), np.uint8), y_test=np.arange(50) % 10)


# (id, argv builder (run dir, tmp dir) -> argv, setup (run dir, tmp dir), error, fragments the message names)
CASES = [
    ("tasks-key-typo", lambda r, t: ["run", str(CONFIG), "--out", str(t / "new"), *sets(TINY + ["tasks.shot=5"])],
     None, ConfigError, ["'shot'", "did you mean 'shots'"]),
    ("model-key-typo", lambda r, t: ["run", str(CONFIG), "--out", str(t / "new"), *sets(TINY + ["model.hiden=[10]"])],
     None, ConfigError, ["'hiden'", "did you mean 'hidden'"]),
    ("device-banana", lambda r, t: ["run", str(CONFIG), "--out", str(t / "new"), *sets(TINY + ["run.device=banana"])],
     None, ConfigError, ["'banana'", "use cpu"]),
    ("config-is-a-directory", lambda r, t: ["run", str(t), "--out", str(t / "new")],
     None, ConfigError, ["is a directory", "pass a YAML file"]),
    ("huge-inner-lr", lambda r, t: ["run", str(CONFIG), "--out", str(t / "new"),
                                    *sets(TINY + ["learner.inner_lr=1000000.0"])],
     None, NumericalError, ["learner.inner_lr=1000000.0", "Lower outer.lr or learner.inner_lr", "step"]),
    ("huge-sgd-outer-lr", lambda r, t: ["run", str(CONFIG), "--out", str(t / "new"),
                                        *sets(TINY + ["outer.optimizer=sgd", "outer.lr=1e10"])],
     None, NumericalError, ["outer.lr=10000000000.0 (sgd)", "Lower outer.lr", "outer.clip_grad"]),
    ("test-adaptation-diverges", lambda r, t: ["run", str(CONFIG), "--out", str(t / "new"),
                                               *sets(TINY + ["outer.steps=0", "learner.inner_lr=1000000.0"])],
     None, NumericalError, ["Evaluation on test tasks", "learner.inner_lr=1000000.0", "lower them"]),
    ("run-out-at-a-sweep", lambda r, t: ["run", str(CONFIG), "--out", str(t / "sweep"), *sets(TINY)],
     lambda r, t: sweep_folder(t / "sweep"), ResultsDirError, ["autometa sweep", "Choose another directory"]),
    ("run-out-at-a-file", lambda r, t: ["run", str(CONFIG), "--out", str(r / "results.json"), *sets(TINY)],
     None, ResultsDirError, ["results.json", "is a file", "Choose a directory"]),
    ("run-out-at-a-finished-run", lambda r, t: ["run", str(CONFIG), "--out", str(r), *sets(TINY)],
     None, ResultsDirError, ["already holds", "--resume", "--overwrite"]),
    ("resume-other-model", lambda r, t: ["run", "--out", str(r), "--resume"],
     lambda r, t: other_model_checkpoint(r), CheckpointError, ["last.pt", "another model"]),
    ("resume-not-a-checkpoint", lambda r, t: ["run", "--out", str(r), "--resume"],
     lambda r, t: torch.save({"a": 1}, r / "checkpoints" / "last.pt"), CheckpointError,
     ["last.pt", "'learner'", "'generator'", "checkpoint written by `autometa run`"]),
    ("resume-truncated-checkpoint", lambda r, t: ["run", "--out", str(r), "--resume"],
     lambda r, t: (r / "checkpoints" / "last.pt").write_bytes((r / "checkpoints" / "best.pt").read_bytes()[:100]),
     CheckpointError, ["last.pt", "damaged", "best.pt"]),
    ("resume-at-a-file", lambda r, t: ["run", "--out", str(r / "results.json"), "--resume"],
     None, ResultsDirError, ["results.json", "is a file", "Choose a directory"]),
    ("resume-and-overwrite", lambda r, t: ["run", "--out", str(r), "--resume", "--overwrite"],
     None, ConfigError, ["--resume", "--overwrite", "pass one of them"]),
    ("resume-changing-a-fixed-key", lambda r, t: ["run", "--out", str(r), "--resume", "--set", "learner.inner_lr=0.5"],
     None, CheckpointError, ["learner.inner_lr", "outer.steps", "another directory"]),
    ("resume-nothing-to-resume", lambda r, t: ["run", "--out", str(t / "empty"), "--resume"],
     lambda r, t: (t / "empty").mkdir(), CheckpointError, ["empty", "no run to resume", "without --resume"]),
    ("evaluate-other-model", lambda r, t: ["evaluate", str(r), "--checkpoint", "last.pt"],
     lambda r, t: other_model_checkpoint(r), CheckpointError, ["last.pt", "another model"]),
    ("evaluate-out-exists", lambda r, t: ["evaluate", str(r), "--out", str(r / "results.json")],
     None, ResultsDirError, ["results.json", "--overwrite"]),
    ("mnist-with-1d-images", lambda r, t: ["run", str(CONFIG), "--out", str(t / "new"),
                                           *sets(TINY + ["tasks={name: mnist, ways: 2, shots: 1, queries: 1, "
                                                         f"root: {t}, classes: {{train: 5, val: 2, test: 3}}}}",
                                                         "model={name: conv4, hidden: 4}"])],
     lambda r, t: mnist_with_flat_images(t), DataIntegrityError, ["mnist.npz", "(50, 784)", "(n, 28, 28)"]),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gives_one_clear_error_and_changes_nothing(case, finished_run, tmp_path, capsys):
    _, argv, setup, error, fragments = case
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    if setup is not None:
        setup(run, scratch)
    before, before_scratch = snapshot(run), snapshot(scratch)
    args = build_parser().parse_args(argv(run, scratch))
    with pytest.raises(error) as info:
        args.func(args)
    assert isinstance(info.value, AutometaError)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} missing from: {message}"
    assert snapshot(run) == before  # nothing already written changed
    after_scratch = snapshot(scratch)
    assert {k: v for k, v in after_scratch.items() if k in before_scratch} == before_scratch
    # a run that failed wrote nothing that claims success
    assert not any(k.endswith("results.json") for k in set(after_scratch) - set(before_scratch))
    for created in set(after_scratch) - set(before_scratch):  # what the failed command wrote, for a clean retry
        shutil.rmtree(scratch / Path(created).parts[0], ignore_errors=True)
    assert main(argv(run, scratch)) == 2  # and the command exits non-zero with the message
    assert fragments[0] in capsys.readouterr().err


def test_divergence_stops_at_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    out = tmp_path / "run"
    args = build_parser().parse_args(["run", str(CONFIG), "--out", str(out),
                                      *sets(TINY + ["outer.optimizer=sgd", "outer.lr=1e10"])])
    with pytest.raises(NumericalError) as info:
        args.func(args)
    step = info.value.step
    assert isinstance(step, int) and step >= 2 and f"at step {step} of 4" in str(info.value)
    last = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert last["step"] == step - 1  # the last good step (checkpoint_every=1), not the diverged one
    assert all(torch.isfinite(v).all() for v in last["learner"].values())
    assert not (out / "results.json").exists()
    assert all(np.isfinite(v) for line in (out / "metrics.jsonl").read_text().splitlines()
               for k, v in json.loads(line).items() if k != "step")


def test_scientific_notation_is_accepted(tmp_path):
    out = tmp_path / "run"
    assert main(["run", str(CONFIG), "--out", str(out), *sets(TINY + ["outer.lr=1e-3"])]) == 0
    assert yaml.safe_load((out / "config.yaml").read_text())["outer"]["lr"] == 0.001


@pytest.mark.parametrize("poison", ["gradient", "loss"])
def test_a_non_finite_gradient_or_loss_alone_stops_the_run(poison, tmp_path, monkeypatch):
    import autometa.experiment._run as run_module

    build = run_module.build_experiment

    def build_poisoned(*args, **kwargs):
        exp = build(*args, **kwargs)
        original = exp.learner.meta_backward
        calls = []

        def meta_backward(batch):
            metrics = original(batch)
            calls.append(1)
            if len(calls) == 3:  # step 3: one of the two goes bad, the other stays finite
                if poison == "gradient":
                    next(p for p in exp.learner.parameters() if p.grad is not None).grad[0] = float("nan")
                else:
                    metrics["loss"] = float("inf")
            return metrics

        exp.learner.meta_backward = meta_backward
        return exp

    monkeypatch.setattr(run_module, "build_experiment", build_poisoned)
    expected = "meta-gradient holds NaN" if poison == "gradient" else "loss is not finite"
    with pytest.raises(NumericalError, match=expected) as info:
        run_module.run_experiment(str(CONFIG), tmp_path / "run", overrides=TINY)
    assert info.value.step == 3
    assert torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)["step"] == 2


def test_a_non_finite_validation_stops_the_run_without_a_nan_best_checkpoint(tmp_path, monkeypatch):
    import autometa.experiment._run as run_module

    evaluate = run_module.evaluate

    def evaluate_nan_validation(*args, **kwargs):
        result = evaluate(*args, **kwargs)
        if kwargs.get("desc", "eval") == "eval":  # validation, not the test
            result["loss"] = {**result["loss"], "mean": float("nan")}
        return result

    monkeypatch.setattr(run_module, "evaluate", evaluate_nan_validation)
    with pytest.raises(NumericalError, match="Evaluation on validation tasks at step 2") as info:
        run_module.run_experiment(str(CONFIG), tmp_path / "run", overrides=TINY)
    assert info.value.step == 2
    assert not (tmp_path / "run" / "checkpoints" / "best.pt").exists()
    assert not (tmp_path / "run" / "results.json").exists()


@pytest.mark.parametrize("override, words", [
    ("run.progress=maybe", ["run.progress", "true or false", "maybe"]),
    ("run.threads=0", ["run.threads", ">= 1", "0"]),
    ("model.hidden=[-4]", ["hidden", "-4", "[40, 40]"]),
])
def test_found_by_the_fault_injection_run(tmp_path, override, words):
    """Cases benchmarks/fault_injection_inputs.py found accepted or raw: now one clear error."""
    from autometa.errors import ConfigError
    from autometa.experiment import run_experiment

    with pytest.raises(ConfigError) as info:
        run_experiment(str(CONFIG), tmp_path / "out",
                       overrides=[override, "outer.steps=2"])
    assert all(w in str(info.value) for w in words), str(info.value)
    assert not (tmp_path / "out" / "results.json").exists()


def test_a_plugin_that_fails_to_import_is_one_config_error(tmp_path):
    from autometa._plugins import load_plugin
    from autometa.errors import ConfigError

    for text in ("def broken(:\n", "raise RuntimeError('boom')\n"):
        plugin = tmp_path / f"p{len(text)}.py"
        plugin.write_text(text)
        with pytest.raises(ConfigError, match="failed while being imported"):
            load_plugin(plugin)
