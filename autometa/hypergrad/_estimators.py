"""Hypergradient estimators: one interface for every way to compute d(outer loss)/d(meta).

A learner describes one task's bilevel problem as an :class:`InnerProblem` (functions of the
meta-parameters ``meta``: where the inner loop starts, the inner and outer losses, the inner
update rule) and hands it to an :class:`Estimator`. The estimator returns ``(surrogate,
metrics)``: a scalar whose gradient with respect to ``meta`` *is* the estimator's
meta-gradient, and per-task metrics. For unrolled estimators the surrogate is the outer loss
itself; for the others (implicit, Reptile, evolution strategies) it is ``sum(meta * g)`` with a
detached estimate ``g``. So every estimator runs through the same batching code (a loop,
threads or ``vmap`` over tasks) and the same ``backward()``, and Reptile or iMAML are learners
that pick an estimator, not loops of their own.

=====================  =========================================================================
:class:`Unrolled`      backpropagation through the inner loop: second order (exact), or
                       ``first_order=True`` (FOMAML); optional activation checkpointing
:class:`Implicit`      implicit function theorem at the inner solution, CG or Neumann series
:class:`ReptileStep`   ``init - adapted``: Reptile's first-order direction (not a loss gradient)
:class:`ES`            antithetic evolution strategies on the meta-parameters (gradient-free)
:class:`TruncatedBPTT` an online unroll in truncations with the state carried between calls
=====================  =========================================================================

Each is checked against a float64 reference in ``tests/hypergrad/test_estimators.py``.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint as _checkpoint

from autometa.errors import ConfigError
from autometa.hypergrad._implicit import implicit_grad
from autometa.hypergrad._unrolled import gradients

Params = dict[str, Tensor]
Meta = dict[str, Tensor]
State = dict[str, Tensor]


@dataclass
class InnerProblem:
    """One task's inner problem as functions of the meta-parameters.

    Attributes:
        init: ``meta -> params``, where the inner loop starts (MAML: the ``init.*`` entries).
        inner_loss: ``(params, meta) -> scalar``, minimised by the inner loop (the support loss).
        outer_loss: ``(params, meta) -> (scalar, metrics)``, the query loss after adaptation.
        init_state: ``(params, meta) -> state`` of the inner update rule.
        update: ``(grads, state, params, meta) -> (params, state)``, one inner step.
        steps: inner steps.
        adapt: which parameter names the inner loop updates (ANIL: the head); default all.
        init_keys: parameter name -> the meta key it starts from (used by :class:`ReptileStep`).
        stepwise: ``inner_loss`` and ``outer_loss`` take a third argument, the index ``t`` of the
            iterate they are evaluated at (0: the initialization; the inner gradient of step
            ``t`` is taken at iterate ``t``, the outer loss after ``n`` steps at iterate ``n``):
            problems whose loss changes every step, such as an optimizee trained on a stream of
            minibatches (learned optimizers).
    """

    init: Callable[[Meta], Params]
    inner_loss: Callable[[Params, Meta], Tensor]
    outer_loss: Callable[[Params, Meta], tuple[Tensor, dict[str, Tensor]]]
    init_state: Callable[[Params, Meta], State]
    update: Callable[[Params, State, Params, Meta], tuple[Params, State]]
    steps: int
    adapt: Callable[[str], bool] | None = None
    init_keys: dict[str, str] | None = None
    stepwise: bool = False


def _inner(problem: InnerProblem, params: Params, meta: Meta, step: int) -> Tensor:
    """The inner loss at iterate ``step`` (the step index is passed only to stepwise problems)."""
    return problem.inner_loss(params, meta, step) if problem.stepwise else problem.inner_loss(params, meta)


def _outer(problem: InnerProblem, params: Params, meta: Meta, step: int):
    """The outer loss at iterate ``step`` (the step index is passed only to stepwise problems)."""
    return problem.outer_loss(params, meta, step) if problem.stepwise else problem.outer_loss(params, meta)


def solve(problem: InnerProblem, meta: Meta, steps: int | None = None, first_order: bool = False,
          checkpoint: bool = False) -> Params:
    """Run the inner loop of ``problem`` from ``problem.init(meta)``, differentiable end to end.

    Args:
        steps: inner steps (default ``problem.steps``).
        first_order: treat the inner gradients as constants (no second-order terms).
        checkpoint: recompute each step's activations during the backward pass (memory grows
            with one step instead of ``steps``, for about one extra forward per step).
    """
    params = problem.init(meta)
    names = [n for n in params if problem.adapt is None or problem.adapt(n)]
    state = problem.init_state({n: params[n] for n in names}, meta)

    def step(params: Params, state: State, t: int = 0) -> tuple[Params, State]:
        grads = gradients(lambda p: _inner(problem, p, meta, t), params, names, first_order,
                          use_autograd=checkpoint)
        new, state = problem.update(grads, state, {n: params[n] for n in names}, meta)
        return {**params, **new}, state

    for t in range(problem.steps if steps is None else steps):
        if checkpoint and torch.is_grad_enabled():
            # the step is re-run during the backward pass, after this loop has moved on
            keys, skeys = list(params), list(state)
            values = _checkpoint(_flat_step(step, keys, skeys, t), *(params[k] for k in keys),
                                 *(state[k] for k in skeys), use_reentrant=False)
            params, state = dict(zip(keys, values[:len(keys)])), dict(zip(skeys, values[len(keys):]))
        else:
            params, state = step(params, state, t)
    return params


def _flat_step(step, keys: list[str], skeys: list[str], t: int = 0):
    """``step`` over flat tuples of tensors, the form activation checkpointing takes."""

    def run(*values: Tensor) -> tuple[Tensor, ...]:
        params, state = step(dict(zip(keys, values[:len(keys)])), dict(zip(skeys, values[len(keys):])), t)
        return tuple(params[k] for k in keys) + tuple(state[k] for k in skeys)

    return run


def _surrogate(meta: Meta, grads: Meta) -> Tensor:
    """A scalar whose gradient with respect to ``meta`` is ``grads`` (detached)."""
    total = None
    for k, g in grads.items():
        if meta[k].requires_grad:
            term = (meta[k] * g.detach()).sum()
            total = term if total is None else total + term
    if total is None:
        like = next(iter(meta.values()))
        return torch.zeros((), dtype=like.dtype, device=like.device)
    return total


class Estimator(abc.ABC):
    """Base class: ``estimator(problem, meta, training) -> (surrogate, metrics)``.

    ``training=False`` (evaluation) adapts without building any meta-gradient graph and returns
    the outer loss. Subclasses set :attr:`batchable` to False when they cannot run under ``vmap``
    or threads (the learner then loops over tasks).
    """

    name: ClassVar[str] = ""
    batchable: ClassVar[bool] = True

    @abc.abstractmethod
    def __call__(self, problem: InnerProblem, meta: Meta, training: bool = True,
                 steps: int | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """The surrogate for one task and its metrics (see the class docstring)."""

    def evaluate(self, problem: InnerProblem, meta: Meta, steps: int | None = None):
        """Adapt without meta-gradients and return ``problem.outer_loss`` at the adapted parameters."""
        steps = problem.steps if steps is None else steps
        return _outer(problem, solve(problem, meta, steps, first_order=True), meta, steps)

    def config(self) -> dict:
        return {"name": self.name, **{k: v for k, v in vars(self).items() if not k.startswith("_")}}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.config().items() if k != 'name')})"


class Unrolled(Estimator):
    """Backpropagation through the unrolled inner loop.

    Args:
        first_order: drop second-order terms (FOMAML); the meta-gradient of the init is then the
            query gradient at the adapted parameters.
        checkpoint: activation checkpointing of each inner step.

    References: Finn, Abbeel & Levine 2017 (MAML); Maclaurin et al. 2015.
    """

    name = "unrolled"

    def __init__(self, first_order: bool = False, checkpoint: bool = False):
        self.first_order, self.checkpoint = bool(first_order), bool(checkpoint)

    def __call__(self, problem, meta, training=True, steps=None):
        if not training:
            return self.evaluate(problem, meta, steps)
        steps = problem.steps if steps is None else steps
        params = solve(problem, meta, steps, self.first_order, self.checkpoint)
        return _outer(problem, params, meta, steps)


class Implicit(Estimator):
    """Implicit differentiation at the inner solution: ``-∂²L_in/∂m∂p (∂²L_in/∂p²)^{-1} ∇_p L_out``.

    Exact when the inner loop reaches a stationary point of ``inner_loss`` (iMAML's proximal
    problem), whatever path it took; memory does not grow with the inner steps.

    Args:
        method: ``"cg"`` (conjugate gradient) or ``"neumann"`` (truncated Neumann series).
        iterations: CG or Neumann iterations.
        alpha: the Neumann step size.

    References: Rajeswaran et al. 2019 (iMAML); Lorraine, Vicol & Duvenaud 2020.
    """

    name = "implicit"
    batchable = False  # its linear solve uses torch.autograd, which vmap does not transform

    def __init__(self, method: str = "cg", iterations: int = 5, alpha: float = 0.1):
        if method not in ("cg", "neumann"):
            raise ConfigError(f"The `method` of the implicit estimator must be 'cg' or 'neumann'. Got {method!r}.")
        if not isinstance(iterations, int) or isinstance(iterations, bool) or iterations < 1:
            raise ConfigError(f"The `iterations` of the implicit estimator must be an integer >= 1. "
                              f"Got {iterations!r}.")
        self.method, self.iterations, self.alpha = method, iterations, float(alpha)

    def __call__(self, problem, meta, training=True, steps=None):
        if problem.stepwise:
            raise ConfigError("The implicit estimator needs one inner loss whose stationary point the inner "
                              "loop reaches; this problem's loss changes every step (stepwise). Use the "
                              "unrolled, truncated or es estimator.")
        with torch.no_grad():
            solution = {k: v.detach() for k, v in solve(problem, meta, steps, first_order=True).items()}
        if not training:
            return problem.outer_loss(solution, meta)
        leaves = {k: v for k, v in meta.items() if v.requires_grad}
        grads = implicit_grad(lambda p, m: problem.inner_loss(p, {**meta, **m}),
                              lambda p, m: problem.outer_loss(p, {**meta, **m})[0],
                              solution, leaves, self.method, self.iterations, self.alpha)
        with torch.no_grad():
            _, metrics = problem.outer_loss(solution, meta)
        return _surrogate(meta, grads), metrics


class ReptileStep(Estimator):
    """Reptile's direction ``init - adapted`` for the initialization (no other meta-parameter moves).

    An outer SGD step of size ε on this "gradient" is Reptile's ``init + ε (adapted - init)``.

    References: Nichol, Achiam & Schulman 2018, "On First-Order Meta-Learning Algorithms".
    """

    name = "reptile"

    def __call__(self, problem, meta, training=True, steps=None):
        if not training:
            return self.evaluate(problem, meta, steps)
        if not problem.init_keys:
            raise ConfigError("The Reptile estimator needs a problem whose initialization is meta-learned "
                              "(InnerProblem.init_keys).")
        with torch.no_grad():
            start = problem.init(meta)
            steps = problem.steps if steps is None else steps
            adapted = solve(problem, meta, steps, first_order=True)
            _, metrics = _outer(problem, adapted, meta, steps)
        grads = {problem.init_keys[n]: start[n] - adapted[n] for n in start}
        return _surrogate(meta, grads), metrics


class ES(Estimator):
    """Antithetic evolution strategies: ``g = mean_i (L(m + σε_i) - L(m - σε_i)) ε_i / (2σ)``.

    Needs no gradient of the inner loop or the outer loss, so it applies to non-differentiable
    inner problems and to long unrolls whose gradients explode (chaotic loss surfaces). It
    estimates the gradient of the Gaussian-smoothed outer loss; its variance falls with
    ``samples``. The noise comes from the estimator's own generator (seeded), so runs repeat.

    Args:
        sigma: the perturbation scale.
        samples: antithetic pairs per task.
        seed: seeds the perturbations.

    References: Salimans et al. 2017, "Evolution Strategies as a Scalable Alternative to
    Reinforcement Learning"; Metz et al. 2019 (ES for learned optimizers).
    """

    name = "es"
    batchable = False  # its noise stream must be consumed in task order to repeat

    def __init__(self, sigma: float = 0.01, samples: int = 8, seed: int = 0):
        if not isinstance(sigma, (int, float)) or isinstance(sigma, bool) or sigma <= 0:
            raise ConfigError(f"The `sigma` of the ES estimator must be a float > 0. Got {sigma!r}.")
        if not isinstance(samples, int) or isinstance(samples, bool) or samples < 1:
            raise ConfigError(f"The `samples` of the ES estimator must be an integer >= 1. Got {samples!r}.")
        self.sigma, self.samples, self.seed = float(sigma), samples, int(seed)
        self._generator = torch.Generator().manual_seed(self.seed)

    def __call__(self, problem, meta, training=True, steps=None):
        if not training:
            return self.evaluate(problem, meta, steps)
        steps = problem.steps if steps is None else steps
        leaves = {k: v for k, v in meta.items() if v.requires_grad}
        grads = {k: torch.zeros_like(v) for k, v in leaves.items()}
        with torch.no_grad():
            for _ in range(self.samples):
                noise = {k: torch.randn(v.shape, generator=self._generator, dtype=v.dtype).to(v.device)
                         for k, v in leaves.items()}
                values = []
                for sign in (1.0, -1.0):
                    shifted = {**meta, **{k: v + sign * self.sigma * noise[k] for k, v in leaves.items()}}
                    adapted = solve(problem, shifted, steps, first_order=True)
                    values.append(_outer(problem, adapted, shifted, steps)[0])
                scale = (values[0] - values[1]) / (2 * self.sigma * self.samples)
                for k in grads:
                    grads[k] += scale * noise[k]
            _, metrics = _outer(problem, solve(problem, meta, steps, first_order=True), meta, steps)
        return _surrogate(meta, grads), metrics


class TruncatedBPTT(Estimator):
    """Truncated backpropagation through time over an inner loop of ``horizon`` steps.

    Each call runs the next ``length`` inner steps of the same inner problem from where the
    previous call stopped (the parameters and rule state are carried, detached, so no gradient
    flows into earlier truncations) and returns the mean outer loss over the iterates of this
    truncation, as in Andrychowicz et al. 2016. After ``horizon`` steps the next call starts a
    new problem. One problem at a time: the learner loops over tasks.

    Args:
        length: inner steps per truncation (20 in the paper).
        horizon: inner steps per problem (100 in the paper).
        first_order: treat the inner gradients as constants (the paper does).

    References: Andrychowicz et al. 2016; Werbos 1990; Wu et al. 2018 on short-horizon bias.
    """

    name = "truncated"
    batchable = False

    def __init__(self, length: int = 20, horizon: int = 100, first_order: bool = True):
        for key, value in (("length", length), ("horizon", horizon)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"The `{key}` of truncated BPTT must be an integer >= 1. Got {value!r}.")
        if horizon % length:
            raise ConfigError(f"truncated BPTT needs `horizon` a multiple of `length`. Got horizon={horizon}, "
                              f"length={length}.")
        self.length, self.horizon, self.first_order = length, horizon, bool(first_order)
        self._carry: Any = None  # (step, params, state) of the problem in progress

    def reset(self) -> None:
        """Forget the problem in progress (the next call starts a new one)."""
        self._carry = None

    @property
    def in_progress(self) -> bool:
        """Whether the next call continues a problem (False: it starts a new one from ``init``)."""
        return self._carry is not None and self._carry[0] < self.horizon

    def __call__(self, problem, meta, training=True, steps=None):
        if not training:
            return self.evaluate(problem, meta, steps)
        if self._carry is None or self._carry[0] >= self.horizon:
            params = problem.init(meta)
            names = [n for n in params if problem.adapt is None or problem.adapt(n)]
            self._carry = (0, params, problem.init_state({n: params[n] for n in names}, meta))
        start, params, state = self._carry
        names = [n for n in params if problem.adapt is None or problem.adapt(n)]
        total, metrics = None, {}
        for t in range(start, start + self.length):
            grads = gradients(lambda p, t=t: _inner(problem, p, meta, t), params, names, self.first_order)
            new, state = problem.update(grads, state, {n: params[n] for n in names}, meta)
            params = {**params, **new}
            loss, metrics = _outer(problem, params, meta, t + 1)
            total = loss if total is None else total + loss
        self._carry = (start + self.length, {k: v.detach() for k, v in params.items()},
                       {k: v.detach() for k, v in state.items()})
        return total / self.length, metrics


ESTIMATORS: dict[str, type[Estimator]] = {cls.name: cls for cls in (Unrolled, Implicit, ReptileStep, ES, TruncatedBPTT)}


def build_estimator(spec) -> Estimator:
    """An estimator from a name (``"implicit"``), a mapping (``{name: es, sigma: 0.02}``) or an instance."""
    if isinstance(spec, Estimator):
        return spec
    spec = {"name": spec} if isinstance(spec, str) else dict(spec or {})
    name = str(spec.pop("name", "unrolled")).lower()
    if name not in ESTIMATORS:
        raise ConfigError(f"Unknown hypergradient estimator {name!r}. Choose one of {sorted(ESTIMATORS)}.")
    try:
        return ESTIMATORS[name](**spec)
    except TypeError as exc:
        raise ConfigError(f"Bad arguments for the {name!r} estimator: {exc}.") from exc
