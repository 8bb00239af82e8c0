"""Run-loop options of issue 15: device-resident tasks, the precision policy, the memory budget."""

import json

import pytest
import torch

from autometa.errors import ConfigError
from autometa.experiment import run_experiment

DIGITS = {
    "seed": 5,
    "tasks": {"name": "digits", "ways": 3, "shots": 1, "queries": 2, "classes": {"train": 5, "val": 0, "test": 5}},
    "model": {"name": "conv4", "hidden": 4, "blocks": 3},
    "learner": {"name": "maml", "inner_lr": 0.1, "batching": "vmap"},
    "outer": {"meta_batch": 4, "steps": 6},
    "run": {"validate_every": 0, "test_tasks": 12, "eval_batch": 6, "checkpoint_every": 3, "log_every": 1,
            "progress": False},
}


def losses(out):
    return [r["train_loss"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())]


def test_device_tasks_on_cpu_train_on_the_same_episodes(tmp_path):
    plain = run_experiment(DIGITS, tmp_path / "plain")
    device = run_experiment(DIGITS, tmp_path / "device", overrides=["run.device_tasks=true"])
    assert losses(tmp_path / "plain") == losses(tmp_path / "device")  # the same episodes, the same steps
    assert plain["test"] == device["test"]
    assert device["train_tasks_digest_of"] == "indices" and plain["train_tasks_digest_of"] == "tensors"
    assert device["precision"] == "fp32"


def test_device_tasks_resume_like_an_uninterrupted_run(tmp_path):
    whole = run_experiment(DIGITS, tmp_path / "whole", overrides=["run.device_tasks=true"])
    run_experiment(DIGITS, tmp_path / "cut", overrides=["run.device_tasks=true", "outer.steps=3"])
    resumed = run_experiment(None, tmp_path / "cut", resume=True, overrides=["outer.steps=6"])
    assert losses(tmp_path / "whole") == losses(tmp_path / "cut")
    assert resumed["train_tasks_digest"] == whole["train_tasks_digest"] and resumed["test"] == whole["test"]


def test_device_tasks_refused_for_tasks_made_on_the_cpu():
    sine = {**DIGITS, "tasks": {"name": "sinusoid", "shots": 5, "queries": 5}, "model": {"name": "mlp"}}
    with pytest.raises(ConfigError, match="run.device_tasks"):
        run_experiment(sine, overrides=["run.device_tasks=true", "outer.steps=1"])


def test_precision_and_memory_budget_are_checked_and_applied():
    with pytest.raises(ConfigError) as info:
        run_experiment(DIGITS, overrides=["run.precision=fp16", "run.memory_budget=-1", "run.device_tasks=1"])
    text = str(info.value)
    assert "run.precision" in text and "run.memory_budget" in text and "run.device_tasks" in text
    before = torch.backends.cudnn.allow_tf32
    results = run_experiment(DIGITS, overrides=["run.precision=bf16", "run.memory_budget=2", "outer.steps=2"])
    assert results["precision"] == "bf16" and results["steps"] == 2
    assert torch.backends.cudnn.allow_tf32 == before  # restored after each call
