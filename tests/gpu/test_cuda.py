"""CUDA checks of issue 15; they skip without CUDA (run on a GPU machine: ``python -m pytest -m gpu tests/gpu``).

- vmap and loop meta-gradients against float64 on the GPU, TF32 off (``precision("fp32")``);
- the device-resident sampler's episodes equal the CPU sampler's;
- a short run and its resumption with the tasks on the device;
- the memory budget of chunked vmap is honoured.
"""

import json

import numpy as np
import pytest
import torch

from autometa.data import ArrayDataset
from autometa.hypergrad import precision
from autometa.learners import MAML
from autometa.nets import Conv4
from autometa.tasks import FewShotClassification, TaskBatch

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def omniglot_shaped(n, ways=5, queries=15, seed=0):
    g = torch.Generator().manual_seed(seed)
    return TaskBatch(torch.rand(n, ways, 1, 28, 28, generator=g), torch.arange(ways).repeat(n, 1),
                     torch.rand(n, ways * queries, 1, 28, 28, generator=g),
                     torch.arange(ways).repeat_interleave(queries).repeat(n, 1))


def meta_grad(batch, mode, dtype, steps, device="cuda", budget=None):
    torch.manual_seed(0)
    learner = MAML(Conv4(1, 5, hidden=64), inner_lr=0.4, inner_steps=steps, batching=mode,
                   memory_budget=budget).to(device=device, dtype=dtype)
    cast = TaskBatch(*(t.to(device=device, dtype=dtype) if t.is_floating_point() else t.to(device)
                       for t in batch.tensors))
    with precision("fp32", device):
        learner.meta_backward(cast)
    return torch.cat([p.grad.reshape(-1).double().cpu() for p in learner.parameters()])


def rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("steps", [1, 5])
def test_vmap_and_loop_meta_gradients_match_float64_with_tf32_off(steps):
    batch = omniglot_shaped(8)
    reference = meta_grad(batch, "loop", torch.float64, steps)
    errors = {mode: rel(meta_grad(batch, mode, torch.float32, steps), reference) for mode in ("loop", "vmap")}
    chunked = rel(meta_grad(batch, "vmap", torch.float32, steps, budget=2), reference)  # 2 bytes: 1 task a chunk
    print(json.dumps({"steps": steps, **errors, "vmap_chunked": chunked}))
    assert errors["loop"] < 1e-3 and errors["vmap"] < 1e-3 and chunked < 1e-3, errors


def test_device_sampler_gives_the_cpu_samplers_episodes_on_cuda():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(30), 20)
    data = ArrayDataset(rng.standard_normal((len(y), 1, 28, 28)).astype(np.float32), y)
    host = FewShotClassification(data, np.arange(2, 30), ways=5, shots=1, queries=15, rotations=(0, 1, 2, 3))
    device = host.to("cuda")
    a = host.sample(16, torch.Generator().manual_seed(5))
    b = device.sample(16, torch.Generator().manual_seed(5))  # the same draws, gathered on the GPU
    assert all(torch.equal(x, z.cpu()) for x, z in zip(a.tensors, b.tensors))
    gen = torch.Generator(device="cuda").manual_seed(5)  # draws on the GPU: another stream, same content rule
    c = device.sample(16, gen)
    again = device.sample(16, torch.Generator(device="cuda").manual_seed(5))
    assert all(torch.equal(x, z) for x, z in zip(c.tensors, again.tensors))
    images = torch.as_tensor(data.x)[c.info["example_index"].cpu()]
    x = torch.cat([c.support_x.view(16, 5, 1, 1, 28, 28), c.query_x.view(16, 5, 15, 1, 28, 28)], 2).cpu()
    rot = c.info["rotations"].cpu()
    assert all(torch.equal(x[t, k], torch.rot90(images[t, k], int(rot[t, k]), dims=(-2, -1)))
               for t in range(16) for k in range(5))


def test_short_run_and_resume_on_cuda_with_device_tasks(tmp_path):
    from autometa.experiment import run_experiment

    config = {"seed": 2, "tasks": {"name": "digits", "ways": 3, "shots": 1, "queries": 2,
                                   "classes": {"train": 5, "val": 0, "test": 5}},
              "model": {"name": "conv4", "hidden": 8, "blocks": 3}, "learner": {"name": "maml", "inner_lr": 0.1},
              "outer": {"meta_batch": 8, "steps": 6},
              "run": {"device": "cuda", "device_tasks": True, "validate_every": 0, "test_tasks": 20,
                      "eval_batch": 10, "checkpoint_every": 3, "log_every": 1, "progress": False}}
    whole = run_experiment(config, tmp_path / "whole")
    run_experiment(config, tmp_path / "cut", overrides=["outer.steps=3"])
    resumed = run_experiment(None, tmp_path / "cut", resume=True, overrides=["outer.steps=6"])
    assert resumed["train_tasks_digest"] == whole["train_tasks_digest"]  # the device generator was restored
    assert resumed["test"]["accuracy"]["mean"] == pytest.approx(whole["test"]["accuracy"]["mean"], abs=0.02)
    assert whole["device_name"] and whole["precision"] == "fp32"


def test_chunked_vmap_stays_within_its_memory_budget():
    batch = omniglot_shaped(32)
    torch.manual_seed(0)
    learner = MAML(Conv4(1, 5, hidden=64), inner_lr=0.4, batching="vmap").cuda()
    cuda = TaskBatch(*(t.cuda() for t in batch.tensors))
    plan = learner.chunk_plan(cuda, True)
    plan.budget = 10**12
    learner.meta_backward(cuda[:1])  # measures one task (the probe) on a one-task batch of the same shape
    per_task = plan.task_bytes
    learner.zero_grad(set_to_none=True)
    learner.meta_backward(cuda[:1])  # the gradients exist: the measured step below adds no new .grad
    plan.budget = 4 * per_task
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    learner.meta_backward(cuda)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    print(json.dumps({"task_mib": per_task / 2**20, "budget_mib": plan.budget / 2**20, "peak_mib": peak / 2**20,
                      "chunks": plan.chunks}))
    assert plan.chunks == [4] * 8
    assert peak <= plan.budget * 1.1, (peak, plan.budget)
