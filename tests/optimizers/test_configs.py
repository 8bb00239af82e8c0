from pathlib import Path

import pytest
import torch

from autometa.experiment import load_config
from autometa.learners import MetaLearnerLSTM, build_learner
from autometa.nets import build_net
from autometa.tasks import TaskBatch

CONFIGS = sorted((Path(__file__).parents[2] / "experiments" / "optimizers").glob("omniglot_metalearner_lstm_*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_omniglot_config_builds_a_working_metalearner_lstm(path):
    config = load_config(path)
    torch.manual_seed(0)
    model = build_net(config["model"], (1, 28, 28), config["tasks"]["ways"])
    learner = build_learner(config["learner"], model, "classification")
    assert isinstance(learner, MetaLearnerLSTM)
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(1, 10, 1, 28, 28, generator=gen)
    labels = torch.arange(10).remainder(5)[None]
    learner.meta_backward(TaskBatch(images[:, :5], labels[:, :5], images[:, 5:], labels[:, 5:]))
    grads = [p.grad for p in learner.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_both_shot_settings_are_shipped():
    names = {p.name for p in CONFIGS}
    assert names >= {"omniglot_metalearner_lstm_5w1s.yaml", "omniglot_metalearner_lstm_5w5s.yaml"}
