"""Data-parallel meta-training over the tasks of a meta-batch (torch.distributed, gloo, 2 CPU processes)."""

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest
import torch

from autometa.errors import ConfigError
from autometa.experiment._distributed import task_share

WORKER = textwrap.dedent("""
    import json, sys, torch
    torch.set_num_threads(1)
    from autometa.experiment._distributed import distributed_meta_backward, init_distributed
    sys.path.insert(0, {here!r})
    from test_distributed_meta import make
    learner, batch = make()
    rank, world, device = init_distributed("cpu")
    metrics = distributed_meta_backward(learner, batch)
    if rank == 0:
        torch.save({{"grads": [p.grad for p in learner.parameters()], "metrics": metrics,
                    "world": world}}, sys.argv[1])
    from autometa.experiment import run_experiment
    from test_distributed_meta import SINE
    run_experiment(SINE, sys.argv[2], overrides=["run.distributed=true"])  # rank 0 writes
""")

SINE = {
    "seed": 3, "tasks": {"name": "sinusoid", "shots": 5, "queries": 5}, "model": {"name": "mlp", "hidden": [16, 16]},
    "learner": {"name": "maml", "inner_lr": 0.01}, "outer": {"meta_batch": 5, "steps": 6},
    "run": {"validate_every": 3, "val_tasks": 10, "test_tasks": 20, "eval_batch": 10, "checkpoint_every": 3,
            "log_every": 1, "progress": False},
}


def make():
    """A float64 MAML on tiny conv tasks: 5 tasks, so 2 processes get 3 and 2; some .grad held before."""
    from autometa.learners import MAML
    from autometa.nets import Conv4
    from autometa.tasks import TaskBatch

    torch.manual_seed(0)
    learner = MAML(Conv4(1, 3, hidden=4, image_size=8, blocks=2).double(), inner_lr=0.3, inner_steps=2,
                   batching="loop")
    g = torch.Generator().manual_seed(1)
    n = 5
    batch = TaskBatch(torch.randn(n, 3, 1, 8, 8, generator=g, dtype=torch.float64), torch.arange(3).repeat(n, 1),
                      torch.randn(n, 6, 1, 8, 8, generator=g, dtype=torch.float64), torch.arange(3).repeat(n, 2))
    first = next(learner.parameters())
    first.grad = torch.full_like(first, 0.5)  # meta_backward accumulates: so must the distributed one
    return learner, batch


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_task_shares_cover_the_batch_once():
    for n in range(1, 9):
        for world in range(1, n + 1):
            shares = [task_share(n, r, world) for r in range(world)]
            assert [i for s in shares for i in range(s.start, s.stop)] == list(range(n))
            assert max(s.stop - s.start for s in shares) - min(s.stop - s.start for s in shares) <= 1


def test_two_gloo_processes_give_the_single_process_meta_gradient(tmp_path):
    here = os.path.dirname(os.path.abspath(__file__))
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(here=here))
    env = dict(os.environ, WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()),
               GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([os.getcwd(), env.get("PYTHONPATH", "")])
    procs = [subprocess.Popen([sys.executable, str(script), str(tmp_path / "out.pt"), str(tmp_path / "run")],
                              env=dict(env, RANK=str(r)),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-2000:]
    got = torch.load(tmp_path / "out.pt", weights_only=True)
    learner, batch = make()
    metrics = learner.meta_backward(batch)
    want = torch.cat([p.grad.reshape(-1) for p in learner.parameters()])
    have = torch.cat([g.reshape(-1) for g in got["grads"]])
    assert got["world"] == 2
    assert (have - want).abs().max() <= 1e-12 * want.abs().max()
    assert got["metrics"] == pytest.approx(metrics, rel=1e-6)  # accuracy is a float32 mean
    # the run loop with run.distributed=true: rank 0 wrote the run; one process gives the same numbers
    from autometa.experiment import run_experiment

    single = run_experiment(SINE, tmp_path / "single")
    both = json.loads((tmp_path / "run" / "results.json").read_text())
    assert both["processes"] == 2 and single["processes"] == 1 and both["steps"] == single["steps"] == 6
    assert both["train_tasks_digest"] == single["train_tasks_digest"]  # every process sampled the same tasks
    assert both["test"]["loss"]["mean"] == pytest.approx(single["test"]["loss"]["mean"], rel=1e-4)
    rows = [[r["train_loss"] for r in map(json.loads, (tmp_path / d / "metrics.jsonl").read_text().splitlines())
             if "train_loss" in r] for d in ("run", "single")]
    assert len(rows[0]) == 6
    assert rows[0] == pytest.approx(rows[1], rel=1e-4)


def test_fewer_tasks_than_processes_is_refused(monkeypatch):
    import torch.distributed as dist

    from autometa.experiment._distributed import distributed_meta_backward

    learner, batch = make()
    monkeypatch.setattr(dist, "get_rank", lambda group=None: 0)
    monkeypatch.setattr(dist, "get_world_size", lambda group=None: 8)
    with pytest.raises(ConfigError, match="outer.meta_batch to >= 8"):
        distributed_meta_backward(learner, batch)


def test_run_distributed_outside_torchrun_is_one_clear_error(monkeypatch):
    from autometa.experiment._distributed import init_distributed

    for key in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(ConfigError, match="torchrun"):
        init_distributed("cpu")
