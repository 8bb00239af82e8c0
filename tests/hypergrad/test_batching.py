"""The three ways of running a meta-batch give the same meta-gradients."""

import pytest
import torch

from autometa.learners import MAML
from autometa.nets import Conv4
from autometa.tasks import TaskBatch


def batch(seed=0, tasks=4):
    g = torch.Generator().manual_seed(seed)
    return TaskBatch(torch.randn(tasks, 3, 1, 16, 16, generator=g), torch.arange(3).repeat(tasks, 1),
                     torch.randn(tasks, 6, 1, 16, 16, generator=g), torch.arange(3).repeat(tasks, 2))


def meta_grads(mode, threads=2):
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(0)
        learner = MAML(Conv4(1, 3, hidden=8, image_size=16), inner_lr=0.3, inner_steps=2, batching=mode)
        metrics = learner.meta_backward(batch())
        evaluation = learner.evaluate(batch(1))
        return [p.grad.clone() for p in learner.parameters()], metrics, evaluation
    finally:
        torch.set_num_threads(previous)


@pytest.mark.parametrize("mode", ["threads", "vmap"])
def test_modes_match_the_loop(mode):
    loop, loop_metrics, loop_eval = meta_grads("loop")
    other, other_metrics, other_eval = meta_grads(mode)
    scale = max(g.abs().max() for g in loop)
    assert max((a - b).abs().max() for a, b in zip(loop, other)) / scale < 1e-5
    assert loop_metrics == pytest.approx(other_metrics, rel=1e-5)
    assert torch.allclose(loop_eval["accuracy"], other_eval["accuracy"])


def test_threads_mode_is_deterministic():
    first, _, _ = meta_grads("threads")
    second, _, _ = meta_grads("threads")
    assert all(torch.equal(a, b) for a, b in zip(first, second))
