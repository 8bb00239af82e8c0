"""The precision policy of meta-gradients (issue 15): switches set inside, restored after."""

import pytest
import torch
from torch import nn

from autometa.errors import ConfigError
from autometa.hypergrad import precision, precision_state
from autometa.learners import MAML
from autometa.tasks import TaskBatch


@pytest.mark.parametrize("policy, tf32", [("fp32", False), ("tf32", True), ("bf16", True)])
def test_policies_set_the_switches_and_restore_them(policy, tf32):
    before = precision_state()
    with precision(policy):
        state = precision_state()
        assert state["cudnn.allow_tf32"] is tf32 and state["cuda.matmul.allow_tf32"] is tf32
        assert state["float32_matmul_precision"] == ("high" if tf32 else "highest")
        assert torch.is_autocast_enabled("cpu") is (policy == "bf16")
    assert precision_state() == before and not torch.is_autocast_enabled("cpu")


def test_torch_policy_changes_nothing_and_unknown_policies_are_refused():
    torch.backends.cudnn.allow_tf32 = True
    with precision("torch"):
        assert torch.backends.cudnn.allow_tf32
    with pytest.raises(ConfigError, match="fp32: exact float32"):
        with precision("fp16"):
            pass


class Recording(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(1, 1)
        self.seen = []

    def forward(self, x):
        self.seen.append(torch.backends.cudnn.allow_tf32)
        return self.linear(x)


def test_a_learner_applies_its_policy_in_every_call():
    model = Recording()
    learner = MAML(model, inner_lr=0.1, task="regression", batching="loop")
    learner.precision_policy = "fp32"
    g = torch.Generator().manual_seed(0)
    batch = TaskBatch(*(torch.randn(2, 4, 1, generator=g) for _ in range(4)))
    torch.backends.cudnn.allow_tf32 = True
    learner.meta_backward(batch)
    learner.evaluate(batch)
    assert model.seen and not any(model.seen) and torch.backends.cudnn.allow_tf32
