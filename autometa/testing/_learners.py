"""Conformance checks every learner must pass, shipped with the library (like ``optuna.testing``).

``check_learner(make_learner, batch)`` runs one learner through the checks that autometa's own
learners pass in ``tests/learners/test_conformance.py``, so a user's own learner (or a learner
on a user's own network) is checked in one line::

    from autometa.testing import check_learner

    def make(seed):
        torch.manual_seed(seed)
        return MAML(nn.Sequential(nn.Linear(1, 16), nn.Tanh(), nn.Linear(16, 1)), task="regression")

    check_learner(make, (support_x, support_y, query_x, query_y))

A failed check raises ``AssertionError`` naming the check and what was found, so it reads as
a test failure under pytest.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable

import torch
from torch import Tensor

from autometa.errors import AutometaError, ConfigError
from autometa.learners import Learner
from autometa.tasks import TaskBatch

CHECKS = ("determinism", "meta_gradient", "evaluate", "buffers", "save_reload", "bad_input",
          "finite_differences")


def check_learner(make_learner: Callable[[int], Learner], batch, *, differentiable: bool = True,
                  seed: int = 0, directions: int = 2, rtol: float = 1e-4) -> list[str]:
    """Check a learner for seeded determinism, save and reload, meta-gradients, bad input, and
    (where ``differentiable``) its float64 meta-gradient against finite differences.

    Args:
        make_learner: ``seed -> learner``; the same seed must build the same learner (seed
            torch, e.g. ``torch.manual_seed(seed)``, before building the network).
        batch: a meta-batch the learner can solve (a :class:`TaskBatch` or a tuple
            ``(support_x, support_y, query_x, query_y)``), a few tiny tasks.
        differentiable: whether the meta-gradient that ``meta_backward`` writes is the exact
            gradient of the training loss it returns (MAML, ANIL, Meta-SGD, metric learners);
            False for learners whose meta-gradient is an approximation or not a gradient at all
            (FOMAML, Reptile, iMAML, first-order learned optimizers): the finite-difference
            check is skipped.
        seed: the seed of the learners built; ``seed + 1`` builds a differently initialised one.
        directions: random directions along which the finite-difference check is made.
        rtol: relative tolerance of the finite-difference check (float64, central differences).

    Returns:
        The names of the checks that ran (all of :data:`CHECKS`, less ``finite_differences``
        when not ``differentiable``, less the gradient checks for a learner without trainable parameters:
        frozen ones, with ``requires_grad=False``, are not meta-parameters and get no finite-difference
        direction).

    Raises:
        AssertionError: a check failed; the message names it and what was found.
        ConfigError: ``make_learner`` is not callable or does not build a :class:`Learner`.

    References: the conformance suites of scikit-learn (``check_estimator``) and Optuna
    (``optuna.testing``).
    """
    if not callable(make_learner) or isinstance(make_learner, torch.nn.Module):
        raise ConfigError(f"check_learner needs make_learner, a function seed -> learner. Got "
                          f"{type(make_learner).__name__}; pass e.g. lambda seed: MAML(make_net(seed)).")
    batch = TaskBatch.coerce(batch, "check_learner")
    learner = _build(make_learner, seed)
    name = type(learner).__name__
    ran = []
    trainable = any(p.requires_grad for p in learner.parameters())  # frozen parameters are not ω

    # determinism: the same seed gives the same learner, metrics and meta-gradients, bit for bit
    twin = _build(make_learner, seed)
    first, second = _state(learner), _state(twin)
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first), (
        f"{name}: make_learner({seed}) built two different learners; seed torch before building the network")
    if trainable:
        metrics = [m.meta_backward(batch) for m in (learner, twin)]
        assert metrics[0] == metrics[1], f"{name}: meta_backward is not deterministic: {metrics[0]} != {metrics[1]}"
        assert all(math.isfinite(v) for v in metrics[0].values()), f"{name}: non-finite metrics {metrics[0]}"
        if "accuracy" in metrics[0]:
            assert 0 <= metrics[0]["accuracy"] <= 1, f"{name}: accuracy {metrics[0]['accuracy']} outside [0, 1]"
        grads = [_grads(m) for m in (learner, twin)]
        assert grads[0].keys() == grads[1].keys() and all(torch.equal(grads[0][k], grads[1][k]) for k in grads[0]), (
            f"{name}: meta_backward wrote different meta-gradients for the same seed and tasks")
        ran.append("determinism")

        # meta-gradients reach the meta-parameters
        assert grads[0], f"{name}: meta_backward wrote no meta-gradient into any parameter's .grad"
        assert all(bool(torch.isfinite(g).all()) for g in grads[0].values()), f"{name}: non-finite meta-gradient"
        assert any(bool(g.abs().sum() > 0) for g in grads[0].values()), f"{name}: every meta-gradient is zero"
        ran.append("meta_gradient")

    # evaluate: per-task finite metrics, deterministic, no graph
    evaluation = learner.evaluate(batch)
    assert isinstance(evaluation, dict) and "loss" in evaluation, (
        f"{name}: evaluate must return a dict of per-task metrics with 'loss'. Got {evaluation!r}")
    for key, value in evaluation.items():
        assert isinstance(value, Tensor) and value.shape == (len(batch),), (
            f"{name}: evaluate()[{key!r}] must have shape ({len(batch)},). Got {getattr(value, 'shape', value)}")
        assert bool(torch.isfinite(value).all()), f"{name}: evaluate()[{key!r}] is not finite: {value}"
        assert not value.requires_grad, f"{name}: evaluate()[{key!r}] holds a graph; evaluate should build none"
    again = learner.evaluate(batch)
    assert all(torch.equal(evaluation[k], again[k]) for k in evaluation), f"{name}: evaluate is not deterministic"
    if not trainable:
        ran.insert(0, "determinism")
    ran.append("evaluate")

    # the network's buffers (e.g. batch norm's running statistics) are not changed by either call
    before = {k: v.clone() for k, v in learner.model.named_buffers()}
    if trainable:
        learner.meta_backward(batch)
    learner.evaluate(batch)
    after = dict(learner.model.named_buffers())
    changed = sorted(k for k in before if k not in after or not torch.equal(before[k], after[k]))
    assert not changed, f"{name}: meta_backward / evaluate changed the network's buffers {changed}"
    ran.append("buffers")

    # save and reload: the state dict is all there is; the parameters are used
    with torch.no_grad():
        for p in learner.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(seed), dtype=p.dtype))
    buffer = io.BytesIO()
    torch.save(learner.state_dict(), buffer)
    buffer.seek(0)
    other = _build(make_learner, seed + 1)
    other.load_state_dict(torch.load(buffer, weights_only=True))
    a, b = learner.evaluate(batch), other.evaluate(batch)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), (
        f"{name}: a learner reloaded from the state dict evaluates differently: {a} != {b}; "
        f"some state that evaluate uses is not in state_dict()")
    if trainable:
        with torch.no_grad():
            for p in other.parameters():
                p.add_(0.5)
        assert not torch.equal(other.evaluate(batch)["loss"], a["loss"]), (
            f"{name}: shifting every parameter by 0.5 did not change evaluate(); the learner ignores its parameters")
    ran.append("save_reload")

    # bad input: one autometa error, never a raw torch error
    for bad in ("not a batch", batch.tensors[:3], tuple(t[0] for t in batch.tensors)):
        for call in ((learner.meta_backward,) if trainable else ()) + (learner.evaluate,):
            try:
                call(bad)
            except AutometaError:
                continue
            except Exception as error:
                raise AssertionError(f"{name}.{call.__name__} on a malformed batch raised {type(error).__name__}: "
                                     f"{error}; it should raise an autometa error") from error
            raise AssertionError(f"{name}.{call.__name__} accepted a malformed batch")
    ran.append("bad_input")

    if trainable and differentiable:
        _check_finite_differences(make_learner, batch, seed, directions, rtol, name)
        ran.append("finite_differences")
    return ran


def _build(make_learner, seed: int) -> Learner:
    learner = make_learner(seed)
    if not isinstance(learner, Learner):
        raise ConfigError(f"check_learner: make_learner({seed}) must return a Learner. Got "
                          f"{type(learner).__name__}.")
    return learner


def _state(learner: Learner) -> dict[str, Tensor]:
    return {k: v.detach() for k, v in learner.state_dict().items()}


def _grads(learner: Learner) -> dict[str, Tensor]:
    return {n: p.grad.clone() for n, p in learner.named_parameters() if p.grad is not None}


def _check_finite_differences(make_learner, batch: TaskBatch, seed: int, directions: int, rtol: float,
                              name: str) -> None:
    """``grad . v`` equals the central difference of the returned training loss along ``v``."""
    batch = TaskBatch(*(t.double() if t.is_floating_point() else t for t in batch.tensors), batch.info)
    learner = _build(make_learner, seed).double()
    loss = learner.meta_backward(batch)["loss"]
    grads = {n: p.grad for n, p in learner.named_parameters() if p.requires_grad}
    generator = torch.Generator().manual_seed(seed)
    origin = {n: p.detach().clone() for n, p in learner.named_parameters() if p.requires_grad}
    scale = max(1e-3, abs(loss))

    def loss_at(step: float, direction: dict[str, Tensor]) -> float:
        with torch.no_grad():
            for n, p in learner.named_parameters():
                if n in origin:
                    p.copy_(origin[n] + step * direction[n])
        learner.zero_grad(set_to_none=True)
        return learner.meta_backward(batch)["loss"]

    for _ in range(directions):
        direction = {n: torch.randn(p.shape, generator=generator, dtype=p.dtype) for n, p in origin.items()}
        norm = math.sqrt(sum(float((v ** 2).sum()) for v in direction.values()))
        direction = {n: v / norm for n, v in direction.items()}
        analytic = sum(float((grads[n] * v).sum()) for n, v in direction.items() if grads[n] is not None)
        eps = 1e-5
        numeric = (loss_at(eps, direction) - loss_at(-eps, direction)) / (2 * eps)
        tolerance = rtol * max(abs(numeric), abs(analytic)) + 1e-8 * scale
        assert abs(numeric - analytic) <= tolerance, (
            f"{name}: in float64 the meta-gradient along a random direction is {analytic:.10g} but the "
            f"central difference of the training loss is {numeric:.10g}. If the meta-gradient is not meant to "
            f"be the exact gradient of the loss meta_backward returns (first-order or Reptile-like), pass "
            f"differentiable=False")
