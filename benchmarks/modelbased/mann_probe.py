"""Does our MANN learn at all? Short meta-training runs outside the run loop (issue #14, part A).

Trains ``mann`` / ``sequence_lstm`` (autometa.learners) with Adam 1e-3, 16 episodes a step, gradient
norm clipped at 10 (the settings of experiments/compare_mann_omniglot.yaml) on one of two episode
streams and prints the per-instance training accuracy (mean over the last ``--window`` steps):

- ``prototype``: 5 classes per episode, each a fresh random binary 20x20 pattern (20% ink), every
  presentation flips 5% of its pixels; 50 steps, labels one step late. Recognising a repeat is
  trivial here, so a learner whose memory path works should leave the label heuristic quickly.
- ``omniglot``: the real episodes of the comparison (``omniglot_sequence``, background alphabets).

``--erase one`` zeroes only the single least-used slot before writing (Santoro et al. 2016:
"the least used memory location is set to zero"; snowkylin/ntm and tristandeleu/ntm-one-shot do
the same) instead of all ``read_heads`` least-used slots.

Example::

    python benchmarks/modelbased/mann_probe.py --learner mann --stream prototype --steps 400

Logs of the runs behind issue 14's diagnosis (one thread each, shared 2-core CPU at load 2-8;
CPU-s are the process's own) are in benchmarks/modelbased/probe/: on the prototype stream MANN
leaves the label heuristic after ~1,200 updates (loss 0.93 and instances 2/3/5/10 at
51/60/70/67% after 3,000) while the LSTM is still at loss 1.52 after 3,000; with 64 episodes a
step MANN leaves it after ~900 updates. On Omniglot (same episode stream for both), MANN and the
LSTM follow the same training curve update for update until the LSTM leaves the heuristic after
~2,900 updates; MANN leaves it after ~3,500 (loss 1.50 -> 1.08 and training accuracy at
instances 2/3/5/10 of 49/53/58/55% by 5,000 updates, 1,057 CPU-s). The comparison's CPU run had
stopped MANN at 2,081 updates.
"""

from __future__ import annotations

import argparse
import time

import torch

from autometa.learners import _memory, build_learner
from autometa.nets import MLP
from autometa.tasks import TaskBatch, make_tasks, presentation_index


def lru_erase_one(memory, usage, read_weights, keys, gates, decay):
    """:func:`autometa.learners._memory.lru_memory_step`, zeroing only the single least-used slot."""
    lu = _memory.least_used(usage, keys.shape[1])
    first = _memory.least_used(usage, 1)
    gate = torch.sigmoid(gates)[..., None]
    write_weights = gate * read_weights + (1 - gate) * lu[:, None, :]
    memory = memory * (1 - first)[..., None] + write_weights.transpose(1, 2) @ keys
    new_read = _memory.cosine_read_weights(keys, memory)
    reads = new_read @ memory
    usage = decay * usage + new_read.sum(1) + write_weights.sum(1)
    return memory, usage, new_read, reads


def prototype_batch(batch: int, ways: int, length: int, dim: int, generator: torch.Generator) -> TaskBatch:
    protos = (torch.rand(batch, ways, dim, generator=generator) < 0.2).float()
    labels = torch.arange(ways).repeat(length // ways)[None].expand(batch, -1)
    labels = torch.gather(labels, 1, torch.rand(batch, length, generator=generator).argsort(1))
    x = torch.gather(protos, 1, labels[..., None].expand(-1, -1, dim))
    flips = (torch.rand(x.shape, generator=generator) < 0.05).float()
    x = (x + flips) % 2
    side = int(dim ** 0.5)
    x = x.view(batch, length, 1, side, side)
    return TaskBatch(x, labels, x, labels, {"instance": presentation_index(labels)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--learner", default="mann", choices=["mann", "sequence_lstm"])
    parser.add_argument("--stream", default="prototype", choices=["prototype", "omniglot"])
    parser.add_argument("--erase", default="heads", choices=["heads", "one"])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--window", type=int, default=50)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch", type=int, default=16, help="episodes a step")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    if args.erase == "one":
        _memory.lru_memory_step = lru_erase_one
    learner = build_learner({"name": args.learner}, MLP(400, None, hidden=[]), "classification")
    optimizer = torch.optim.Adam(learner.parameters(), lr=args.lr)
    if args.stream == "omniglot":
        tasks = make_tasks({"name": "omniglot_sequence", "ways": 5, "length": 50, "image_size": 20,
                             "scheme": "lake"}, "train")
        sample = lambda: tasks.sample(args.batch, generator)
    else:
        sample = lambda: prototype_batch(args.batch, 5, 50, 400, generator)
    history = []
    start = time.process_time()
    for step in range(1, args.steps + 1):
        optimizer.zero_grad()
        metrics = learner.meta_backward(sample())
        torch.nn.utils.clip_grad_norm_(learner.parameters(), 10.0)
        optimizer.step()
        history.append(metrics)
        if step % args.window == 0:
            last = history[-args.window:]
            acc = [sum(m[f"accuracy_{k}"] for m in last) / len(last) for k in (1, 2, 3, 5, 10)]
            loss = sum(m["loss"] for m in last) / len(last)
            print(f"{args.learner} {args.stream} erase={args.erase} batch {args.batch} step {step} "
                  f"({step * args.batch} episodes, "
                  f"{time.process_time() - start:.0f} CPU-s): loss {loss:.3f}, inst 1/2/3/5/10 "
                  + " / ".join(f"{100 * a:.1f}" for a in acc), flush=True)


if __name__ == "__main__":
    main()
