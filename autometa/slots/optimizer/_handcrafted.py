"""Hand-crafted fillers of the optimizer slot: update rules as pure functions over dicts of tensors.

Each rule is a small :class:`~autometa.slots.Filler` holding its hyperparameters and two pure
methods, in the TorchOpt spirit:

- ``init(params, meta=None) -> state``
- ``update(grads, state, params, meta=None) -> (new_params, new_state)``

Nothing is modified in place, so the result is differentiable with respect to the inputs and
to the hyperparameters: ``lr`` (or ``momentum``, ``betas``, ...) may be a tensor that requires
grad, which is how a searched hyperparameter becomes a learned one (hypergradient descent).
The arithmetic follows ``torch.optim`` step by step, so that trajectories match it (tested).
"""

from __future__ import annotations

import abc
from typing import ClassVar

import torch
from torch import Tensor

from autometa.errors import ConfigError
from autometa.slots._base import Filler, build_filler, register_filler

Params = dict[str, Tensor]
State = dict[str, Tensor]


def _check_hyper(owner: str, name: str, value, low: float, high: float | None = None,
                 include_low: bool = False) -> None:
    """Raise :class:`ConfigError` unless ``value`` (a number or a scalar tensor) is in range."""
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ConfigError(f"The `{name}` of {owner} must be a scalar. Got a tensor of shape "
                              f"{tuple(value.shape)}; pass a 0-dim tensor or a float.")
        number = float(value.detach())
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    else:
        raise ConfigError(f"The `{name}` of {owner} must be a float or a scalar tensor. "
                          f"Got {value!r} instead.")
    ok = (number >= low if include_low else number > low) and (high is None or number < high)
    if not ok:
        bound = f"{'>=' if include_low else '>'} {low}" + (f" and < {high}" if high is not None else "")
        raise ConfigError(f"The `{name}` of {owner} must be {bound}. Got {number!r} instead.")


class UpdateRule(Filler, abc.ABC):
    """Base class of the optimizer slot's fillers: ``init`` / ``update`` plus ``space``.

    Subclasses set :attr:`SPACE` and implement :meth:`init` and :meth:`update`. The state is a
    flat dict of tensors whose keys are ``"<kind>/<param name>"`` (e.g. ``"exp_avg/w"``) plus
    ``"step"``, so it can be saved with ``torch.save`` and loaded with ``weights_only=True``.
    A hyperparameter given as a tensor that requires grad (``lr=torch.tensor(0.01,
    requires_grad=True)``) is a meta-parameter: :meth:`meta_params` returns it and ``update``
    reads it from ``meta``, which is how a searched hyperparameter becomes a learned one.
    """

    slot: ClassVar[str] = "optimizer"

    def meta_params(self) -> dict[str, Tensor]:
        """Learned parameters and the hyperparameters that are tensors requiring grad."""
        found = super().meta_params()
        found.update({k: v for k, v in vars(self).items() if isinstance(v, Tensor) and v.requires_grad})
        return found

    def hyper(self, meta: dict[str, Tensor] | None, name: str):
        """Hyperparameter ``name``: from ``meta`` when it is a meta-parameter, else the stored value."""
        return meta[name] if meta is not None and name in meta else getattr(self, name)

    @abc.abstractmethod
    def init(self, params: Params, meta: dict[str, Tensor] | None = None) -> State:
        """The optimizer state for ``params`` (zeros; never shares memory with ``params``)."""

    @abc.abstractmethod
    def update(self, grads: Params, state: State, params: Params,
               meta: dict[str, Tensor] | None = None) -> tuple[Params, State]:
        """One step: new parameters and new state, computed out of place."""

    def _decayed(self, grads: Params, params: Params) -> Params:
        weight_decay = getattr(self, "weight_decay", 0.0)
        if isinstance(weight_decay, (int, float)) and weight_decay == 0:
            return grads
        return {k: g + weight_decay * params[k] for k, g in grads.items()}


def _safe_sqrt(x: Tensor) -> Tensor:
    """``sqrt(x)`` whose derivative at ``x = 0`` is 0 instead of inf.

    A coordinate whose gradient is exactly zero (a dead ReLU, an unused input) has a zero second
    moment; differentiating ``sqrt`` there gives inf * 0 = NaN in a second-order meta-gradient. The
    value is unchanged, so trajectories still equal ``torch.optim``'s.
    """
    positive = x > 0
    return torch.where(positive, torch.where(positive, x, torch.ones_like(x)).sqrt(), torch.zeros_like(x))


def _step_zero() -> Tensor:
    # float64 so that Adam's bias corrections ``1 - beta ** step`` match torch.optim's Python floats
    return torch.zeros((), dtype=torch.float64)


def _zeros(prefix: str, params: Params) -> State:
    return {f"{prefix}/{k}": torch.zeros_like(p).detach() for k, p in params.items()}


class SGD(UpdateRule):
    """Plain gradient descent: ``params - lr * grad`` (``torch.optim.SGD`` without momentum).

    Args:
        lr: step size (a float or a scalar tensor, possibly requiring grad).
        weight_decay: L2 penalty added to the gradient, as in ``torch.optim``.

    Example::

        rule = SGD(lr=0.1)
        state = rule.init(params)
        params, state = rule.update(grads, state, params)
    """

    SPACE: ClassVar[dict] = {"lr": {"float": [1e-4, 10.0], "log": True}}

    def __init__(self, lr=0.01, weight_decay=0.0):
        super().__init__()
        _check_hyper("SGD", "lr", lr, 0.0)
        _check_hyper("SGD", "weight_decay", weight_decay, 0.0, include_low=True)
        self.lr, self.weight_decay = lr, weight_decay

    def init(self, params, meta=None):
        return {"step": _step_zero()}

    def update(self, grads, state, params, meta=None):
        grads = self._decayed(grads, params)
        lr = self.hyper(meta, "lr")
        new = {k: p - lr * grads[k] for k, p in params.items()}
        return new, {"step": state["step"] + 1}


class Momentum(UpdateRule):
    """Heavy-ball momentum, as ``torch.optim.SGD(momentum=...)`` with dampening 0.

    ``buf = momentum * buf + grad``; ``params - lr * buf`` (``nesterov``: ``grad + momentum * buf``).

    References: Polyak 1964, "Some methods of speeding up the convergence of iteration methods";
    Sutskever et al. 2013, "On the importance of initialization and momentum in deep learning".
    """

    SPACE: ClassVar[dict] = {"lr": {"float": [1e-4, 10.0], "log": True}, "momentum": {"float": [0.5, 0.99]}}
    NESTEROV: ClassVar[bool] = False

    def __init__(self, lr=0.01, momentum=0.9, weight_decay=0.0):
        super().__init__()
        name = type(self).__name__
        _check_hyper(name, "lr", lr, 0.0)
        _check_hyper(name, "momentum", momentum, 0.0, 1.0, include_low=True)
        _check_hyper(name, "weight_decay", weight_decay, 0.0, include_low=True)
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay

    def init(self, params, meta=None):
        # A zero buffer makes the first step ``buf = grad``, which is torch.optim's first step.
        return {"step": _step_zero(), **_zeros("momentum_buffer", params)}

    def update(self, grads, state, params, meta=None):
        grads = self._decayed(grads, params)
        lr, momentum = self.hyper(meta, "lr"), self.hyper(meta, "momentum")
        new_params, new_state = {}, {"step": state["step"] + 1}
        for k, p in params.items():
            buf = momentum * state[f"momentum_buffer/{k}"] + grads[k]
            direction = grads[k] + momentum * buf if self.NESTEROV else buf
            new_params[k] = p - lr * direction
            new_state[f"momentum_buffer/{k}"] = buf
        return new_params, new_state


class Nesterov(Momentum):
    """Nesterov momentum in ``torch.optim.SGD(nesterov=True)``'s form: step along ``grad + momentum * buf``.

    References: Nesterov 1983; Sutskever et al. 2013.
    """

    NESTEROV = True


class RMSprop(UpdateRule):
    """RMSprop as ``torch.optim.RMSprop`` (not centred, no momentum).

    ``sq = alpha * sq + (1 - alpha) * grad**2``; ``params - lr * grad / (sqrt(sq) + eps)``.

    References: Tieleman & Hinton 2012, Lecture 6.5 of "Neural Networks for Machine Learning".
    """

    SPACE: ClassVar[dict] = {"lr": {"float": [1e-5, 1.0], "log": True}, "alpha": {"float": [0.9, 0.999]}}

    def __init__(self, lr=0.01, alpha=0.99, eps=1e-8, weight_decay=0.0):
        super().__init__()
        _check_hyper("RMSprop", "lr", lr, 0.0)
        _check_hyper("RMSprop", "alpha", alpha, 0.0, 1.0, include_low=True)
        _check_hyper("RMSprop", "eps", eps, 0.0, include_low=True)
        _check_hyper("RMSprop", "weight_decay", weight_decay, 0.0, include_low=True)
        self.lr, self.alpha, self.eps, self.weight_decay = lr, alpha, eps, weight_decay

    def init(self, params, meta=None):
        return {"step": _step_zero(), **_zeros("square_avg", params)}

    def update(self, grads, state, params, meta=None):
        grads = self._decayed(grads, params)
        lr, alpha = self.hyper(meta, "lr"), self.hyper(meta, "alpha")
        new_params, new_state = {}, {"step": state["step"] + 1}
        for k, p in params.items():
            sq = alpha * state[f"square_avg/{k}"] + (1 - alpha) * grads[k] * grads[k]
            new_params[k] = p - lr * grads[k] / (_safe_sqrt(sq) + self.eps)
            new_state[f"square_avg/{k}"] = sq
        return new_params, new_state


class Adam(UpdateRule):
    """Adam as ``torch.optim.Adam`` (bias-corrected moments, ``eps`` outside the square root).

    Args:
        lr, betas, eps, weight_decay: as in ``torch.optim.Adam``.
        eps_root: added *inside* the square root (TorchOpt's ``eps_root``). Not needed for
            differentiating through the update: the square root's derivative at a zero second
            moment is taken as 0 (see :func:`_safe_sqrt`).

    References: Kingma & Ba 2015, "Adam: A Method for Stochastic Optimization".
    """

    SPACE: ClassVar[dict] = {"lr": {"float": [1e-5, 1.0], "log": True}, "betas.0": {"float": [0.5, 0.99]},
             "betas.1": {"float": [0.9, 0.9999]}}

    def __init__(self, lr=0.001, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, eps_root=0.0):
        super().__init__()
        _check_hyper("Adam", "lr", lr, 0.0)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ConfigError(f"The `betas` of Adam must be a pair (beta1, beta2). Got {betas!r} instead.")
        for i, beta in enumerate(betas):
            _check_hyper("Adam", f"betas[{i}]", beta, 0.0, 1.0, include_low=True)
        _check_hyper("Adam", "eps", eps, 0.0, include_low=True)
        _check_hyper("Adam", "eps_root", eps_root, 0.0, include_low=True)
        _check_hyper("Adam", "weight_decay", weight_decay, 0.0, include_low=True)
        self.lr, self.betas, self.eps, self.eps_root = lr, tuple(betas), eps, eps_root
        self.weight_decay = weight_decay

    def meta_params(self) -> dict[str, Tensor]:
        found = super().meta_params()
        found.update({f"betas.{i}": b for i, b in enumerate(self.betas)
                      if isinstance(b, Tensor) and b.requires_grad})
        return found

    def init(self, params, meta=None):
        return {"step": _step_zero(), **_zeros("exp_avg", params), **_zeros("exp_avg_sq", params)}

    def update(self, grads, state, params, meta=None):
        grads = self._decayed(grads, params)
        beta1 = meta.get("betas.0", self.betas[0]) if meta is not None else self.betas[0]
        beta2 = meta.get("betas.1", self.betas[1]) if meta is not None else self.betas[1]
        lr = self.hyper(meta, "lr")
        step = state["step"] + 1
        bias_correction1 = 1 - beta1 ** step
        bias_correction2 = 1 - beta2 ** step
        new_params, new_state = {}, {"step": step}
        for k, p in params.items():
            m = beta1 * state[f"exp_avg/{k}"] + (1 - beta1) * grads[k]
            v = beta2 * state[f"exp_avg_sq/{k}"] + (1 - beta2) * grads[k] * grads[k]
            denom = _safe_sqrt(v + self.eps_root) / bias_correction2 ** 0.5 + self.eps
            new_params[k] = p - (lr / bias_correction1) * m / denom
            new_state[f"exp_avg/{k}"], new_state[f"exp_avg_sq/{k}"] = m, v
        return new_params, new_state


HANDCRAFTED: dict[str, type[UpdateRule]] = {
    "sgd": SGD, "momentum": Momentum, "nesterov": Nesterov, "rmsprop": RMSprop, "adam": Adam,
}
for _name, _cls in HANDCRAFTED.items():
    register_filler(_name, _cls)


def build_rule(spec: dict) -> UpdateRule:
    """A hand-crafted rule from ``{"name": "adam", "lr": 0.01, ...}``."""
    spec = {"name": spec} if isinstance(spec, str) else spec
    name = str(dict(spec).get("name", "")).lower()
    if name not in HANDCRAFTED:
        raise ConfigError(f"Unknown optimizer {name!r}. Choose one of {sorted(HANDCRAFTED)}.")
    return build_filler("optimizer", spec)
