"""Learned fillers of the optimizer slot whose meta-parameters depend on the model's shapes."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from autometa.errors import ConfigError, UnsupportedFeatureError
from autometa.slots.optimizer._handcrafted import UpdateRule, _check_hyper, _step_zero


def _key(name: str) -> str:
    return name.replace(".", "__")  # parameter names may not contain dots inside a ParameterDict


class LearnedRates(UpdateRule):
    """A learned step size for every coordinate of every parameter: ``params - lrs ⊙ grad``.

    With MAML this is Meta-SGD. The rates are created by :meth:`build` from the model's
    parameters, each initialised to ``lr``; they are the meta-parameters ``lrs.<param>``.

    Args:
        lr: the initial value of every rate (Meta-SGD's paper samples them; a constant start
            makes Meta-SGD's first meta-step equal MAML's).

    References: Li et al. 2017, "Meta-SGD: Learning to Learn Quickly for Few-Shot Learning".
    """

    SPACE: ClassVar[dict] = {"lr": {"float": [1e-3, 1.0], "log": True}}

    def __init__(self, lr: float = 0.4):
        super().__init__()
        _check_hyper("LearnedRates", "lr", lr, 0.0)
        self.lr = float(lr)
        self.lrs = nn.ParameterDict()

    def build(self, params: dict[str, Tensor]) -> None:
        """Create one rate tensor per parameter in ``params`` (once; later calls check the shapes)."""
        if len(self.lrs):
            missing = [n for n in params if _key(n) not in self.lrs]
            if missing:
                raise ConfigError(f"LearnedRates was built for other parameters; missing {missing}. "
                                  f"Use a fresh filler for each model.")
            return
        for name, p in params.items():
            self.lrs[_key(name)] = nn.Parameter(torch.full_like(p.detach(), self.lr))

    def init(self, params, meta=None):
        return {"step": _step_zero()}

    def update(self, grads, state, params, meta=None):
        meta = self.resolve(meta)
        if not meta and not len(self.lrs):
            raise UnsupportedFeatureError("LearnedRates has no rates yet: call build(params) with the model's "
                                          "parameters first (learners do this for you).")
        new = {}
        for k, p in params.items():
            lr = meta.get(f"lrs.{_key(k)}") if meta else None
            new[k] = p - (self.lrs[_key(k)] if lr is None else lr) * grads[k]
        return new, {"step": state["step"] + 1}
