"""``vmap`` in chunks that fit a memory budget gives the unchunked meta-gradient (issue 15)."""

import logging

import pytest
import torch

from autometa.errors import ConfigError
from autometa.hypergrad import ChunkPlan, batched, memory_budget
from autometa.learners import MAML
from autometa.nets import Conv4
from autometa.tasks import TaskBatch


def tasks(n=7, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return TaskBatch(torch.randn(n, 3, 1, 16, 16, generator=g, dtype=dtype), torch.arange(3).repeat(n, 1),
                     torch.randn(n, 6, 1, 16, 16, generator=g, dtype=dtype), torch.arange(3).repeat(n, 2))


def learner(budget=None, steps=2, first_order=False):
    torch.manual_seed(0)
    return MAML(Conv4(1, 3, hidden=8, image_size=16).double(), inner_lr=0.3, inner_steps=steps,
                first_order=first_order, batching="vmap", memory_budget=budget)


def grads_of(lrn, batch):
    metrics = lrn.meta_backward(batch)
    return torch.cat([p.grad.reshape(-1) for p in lrn.parameters()]), metrics


def unchunked(batch, steps=2, first_order=False):
    lrn = learner(steps=steps, first_order=first_order)
    _, metrics = batched(lambda m, *t: lrn.task_loss(m, *t, training=True), lrn.meta_params(), batch.tensors,
                         "vmap", backward=True)  # no plan: one vmap over the whole meta-batch
    return torch.cat([p.grad.reshape(-1) for p in lrn.parameters()]), {k: v.mean().item() for k, v in metrics.items()}


@pytest.mark.parametrize("first_order", [False, True])
def test_chunked_equals_unchunked_in_float64(first_order):
    batch = tasks()
    whole, whole_metrics = unchunked(batch, first_order=first_order)
    lrn = learner(budget=2, first_order=first_order)  # 2 bytes: probe, then one task per chunk
    probed, _ = grads_of(lrn, batch)  # the probe's own gradient is discarded
    plan = next(iter(lrn._plans.values()))
    assert plan.chunks == [1] * 7 and plan.task_bytes > 1000
    assert (probed - whole).abs().max() <= 1e-12 * whole.abs().max()
    lrn = learner(first_order=first_order)
    for p in lrn.parameters():
        p.grad = None
    lrn._plans.clear()
    key_plan = lrn.chunk_plan(batch, True)
    key_plan.task_bytes = 10
    key_plan.budget = 30  # 3 tasks per chunk: 3 + 3 + 1
    chunked, metrics = grads_of(lrn, batch)
    assert key_plan.chunks == [3, 3, 1]
    assert (chunked - whole).abs().max() <= 1e-12 * whole.abs().max()
    assert metrics == pytest.approx(whole_metrics, rel=1e-12)


def test_probe_then_chunks_equal_unchunked_and_honour_the_budget():
    batch = tasks(n=9)
    whole, _ = unchunked(batch)
    lrn = learner()
    plan = lrn.chunk_plan(batch, True)
    probe = ChunkPlan(budget=10**12)
    batched(lambda m, *t: lrn.task_loss(m, *t, training=True), lrn.meta_params(),
            tuple(t[:1] for t in batch.tensors), "vmap", backward=False, plan=probe)  # measures one task
    for p in lrn.parameters():
        p.grad = None
    plan.budget = int(2.5 * probe.task_bytes)  # room for two tasks' peaks
    chunked, _ = grads_of(lrn, batch)
    assert plan.task_bytes is not None and sum(plan.chunks) == 9
    assert all(c * plan.task_bytes <= plan.budget for c in plan.chunks), (plan.chunks, plan.task_bytes, plan.budget)
    assert max(plan.chunks) == plan.budget // plan.task_bytes
    assert (chunked - whole).abs().max() <= 1e-12 * whole.abs().max()


def test_vmap_calls_never_exceed_the_chunk(monkeypatch):
    seen = []
    real = torch.func.vmap

    def recording(fn, in_dims, **kw):
        inner = real(fn, in_dims, **kw)

        def call(*args):
            seen.append(args[1].shape[0])
            return inner(*args)
        return call

    monkeypatch.setattr(torch.func, "vmap", recording)
    lrn = learner()
    batch = tasks(n=8)
    plan = lrn.chunk_plan(batch, True)
    plan.task_bytes, plan.budget = 100, 250
    lrn.meta_backward(batch)
    assert seen == [2, 2, 2, 2]
    seen.clear()
    lrn.evaluate(batch)  # evaluation has its own plan, measured by a probe (looped on a CPU)
    assert sum(seen) == 8 and len(lrn._plans) == 2


def test_small_budget_runs_one_task_at_a_time_and_warns(caplog):
    plan = ChunkPlan(budget=10, task_bytes=100)
    with caplog.at_level(logging.WARNING):
        assert plan.chunk_size(32) == 1
    assert "memory budget" in caplog.text
    assert ChunkPlan(budget=10**9, task_bytes=100).chunk_size(32) == 32


def test_a_trials_gpu_share_caps_its_free_memory():
    from autometa.hypergrad._batching import shared_free

    assert shared_free(80, 100, "0.25") == 25 and shared_free(10, 100, "0.25") == 10
    assert shared_free(80, 100, None) == 80 and shared_free(80, 100, "1") == 80 and shared_free(80, 100, "x") == 80


def test_memory_budget_default_fraction_and_bytes():
    free = memory_budget("cpu", 1.0)
    assert free > 0
    assert memory_budget("cpu") == pytest.approx(free / 4, rel=0.05)  # free memory moves a little
    assert memory_budget("cpu", 12345) == 12345
    for bad in (0, -1, float("nan"), "1GB", True):
        with pytest.raises(ConfigError, match="fraction in"):
            memory_budget("cpu", bad)
    with pytest.raises(ConfigError, match="memory_budget` of MAML"):
        MAML(Conv4(1, 3, hidden=8, image_size=16), memory_budget=-2)
