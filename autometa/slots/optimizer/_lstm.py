"""The LSTM optimizer of Andrychowicz et al. 2016.

``LSTMOptimizer`` has the same functional face as the hand-crafted rules
(``init(params) -> state``, ``update(grads, state, params) -> (params, state)``), so anything
that runs SGD or Adam on a problem runs the learned optimizer too; its LSTM weights are the
meta-parameters ω. It is meta-trained by the hypergradient estimators like any other
meta-parameter: on optimizee families by :class:`autometa.learners.L2O` (truncated BPTT by
default), or as MAML's inner optimizer (``learner.optimizer: {name: lstm}``).
"""

from __future__ import annotations

import math
import os
from typing import ClassVar

import torch
from torch import Tensor, nn

from autometa.errors import CheckpointError, ConfigError, NumericalError
from autometa.slots.optimizer._handcrafted import UpdateRule

Params = dict[str, Tensor]
State = dict[str, Tensor]


def preprocess_gradients(grads: Tensor, p: float = 10.0) -> Tensor:
    """The paper's gradient preprocessing: two features per coordinate, ``(n,)`` -> ``(n, 2)``.

    ``(log|g| / p, sign g)`` if ``|g| >= exp(-p)``, else ``(-1, exp(p) g)``: the magnitude is put
    on a log scale so that one LSTM can read gradients of very different sizes.

    References: Andrychowicz et al. 2016, appendix A.
    """
    magnitude = grads.abs()
    large = magnitude >= math.exp(-p)
    # clamp so that the log's derivative stays finite in the branch ``where`` discards
    log_part = torch.where(large, magnitude.clamp_min(math.exp(-p)).log() / p, -torch.ones_like(grads))
    sign_part = torch.where(large, torch.sign(grads), math.exp(p) * grads)
    return torch.stack([log_part, sign_part], dim=-1)


def check_finite_update(owner: str, step: int, name: str, delta: Tensor, grad: Tensor) -> None:
    """Raise :class:`NumericalError` if a proposed update holds NaN or inf."""
    bad = ~torch.isfinite(delta)
    if bool(bad.any()):
        grad_note = ("the gradient there was finite" if bool(torch.isfinite(grad[bad]).all())
                     else "the gradient there was already NaN/inf: the problem diverged first")
        raise NumericalError(
            f"{owner} produced a non-finite update at step {step} for parameter {name!r} "
            f"({int(bad.sum())} of {delta.numel()} coordinates; {grad_note}). Lower the meta "
            f"learning rate or output_scale, clip meta-gradients, or shorten the unroll."
        )


class LSTMOptimizer(UpdateRule):
    """A coordinatewise two-layer LSTM that maps each coordinate's gradient to its update.

    One small LSTM is shared across all coordinates of all parameters (each coordinate has its
    own hidden state), so the optimizer applies to any number of parameters. The update is
    ``params + output_scale * Linear(LSTM(preprocess(grad)))``.

    Args:
        hidden_size: LSTM units per layer (20 in the paper).
        num_layers: stacked LSTM layers (2 in the paper).
        preprocess: the ``p`` of the gradient preprocessing (10); ``None`` feeds the raw gradient.
        output_scale: multiplies the LSTM output (0.1 in the paper).
        check_finite: raise :class:`NumericalError` on a NaN/inf update (naming step and parameter).

    Example::

        optimizer = LSTMOptimizer()
        state = optimizer.init(params)
        params, state = optimizer.update(grads, state, params)

    References: Andrychowicz et al. 2016, "Learning to learn by gradient descent by gradient descent".
    """

    SPACE: ClassVar[dict] = {"hidden_size": {"int": [5, 64]},
                             "output_scale": {"float": [0.01, 1.0], "log": True}}

    def __init__(self, hidden_size: int = 20, num_layers: int = 2, preprocess: float | None = 10.0,
                 output_scale: float = 0.1, check_finite: bool = True):
        super().__init__()
        for name, value in (("hidden_size", hidden_size), ("num_layers", num_layers)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"The `{name}` of LSTMOptimizer must be an integer >= 1. Got {value!r}.")
        if preprocess is not None and not (isinstance(preprocess, (int, float)) and preprocess > 0):
            raise ConfigError(f"The `preprocess` of LSTMOptimizer must be a float > 0 or None. "
                              f"Got {preprocess!r}.")
        if not (isinstance(output_scale, (int, float)) and output_scale > 0):
            raise ConfigError(f"The `output_scale` of LSTMOptimizer must be a float > 0. "
                              f"Got {output_scale!r}.")
        self.hidden_size, self.num_layers = hidden_size, num_layers
        self.preprocess, self.output_scale = preprocess, float(output_scale)
        self.check_finite = bool(check_finite)
        input_size = 2 if preprocess is not None else 1
        self.cells = nn.ModuleList(
            nn.LSTMCell(input_size if i == 0 else hidden_size, hidden_size) for i in range(num_layers))
        self.output = nn.Linear(hidden_size, 1)

    def config(self) -> dict:
        """The constructor arguments, to rebuild this optimizer."""
        return {"hidden_size": self.hidden_size, "num_layers": self.num_layers,
                "preprocess": self.preprocess, "output_scale": self.output_scale,
                "check_finite": self.check_finite}

    def init(self, params: Params, meta: dict[str, Tensor] | None = None) -> State:
        """Zero hidden and cell states for every coordinate of ``params``."""
        reference = next(iter(self.parameters()))
        count = sum(p.numel() for p in params.values())
        state = {"step": torch.zeros((), dtype=torch.long)}
        for i in range(self.num_layers):
            for kind in ("h", "c"):
                state[f"{kind}{i}"] = torch.zeros(count, self.hidden_size, dtype=reference.dtype,
                                                  device=reference.device)
        return state

    def update(self, grads: Params, state: State, params: Params,
               meta: dict[str, Tensor] | None = None) -> tuple[Params, State]:
        """One learned step for all coordinates at once, with the LSTM weights ``meta`` (default: its own).

        ``meta`` may hold some of the weights (``cells.0.weight_ih``, ...); the others are the
        module's own. The cells are applied as functions of the weights (no module call), so
        module hooks (e.g. ``FlopCounterMode``'s) never see them and no parameters are swapped.

        Raises:
            NumericalError: if ``check_finite`` and some update is NaN or inf.
        """
        weights = dict(self.named_parameters())
        if meta:
            weights.update(meta)
        names = list(params)
        flat = torch.cat([grads[k].reshape(-1) for k in names])
        x = preprocess_gradients(flat, self.preprocess) if self.preprocess is not None else flat[:, None]
        new_state = {"step": state["step"] + 1}
        for i in range(self.num_layers):
            h, c = torch.lstm_cell(x, (state[f"h{i}"], state[f"c{i}"]), weights[f"cells.{i}.weight_ih"],
                                   weights[f"cells.{i}.weight_hh"], weights[f"cells.{i}.bias_ih"],
                                   weights[f"cells.{i}.bias_hh"])
            new_state[f"h{i}"], new_state[f"c{i}"] = h, c
            x = h
        delta = nn.functional.linear(x, weights["output.weight"], weights["output.bias"]).squeeze(-1)
        delta = delta * self.output_scale
        new_params, offset = {}, 0
        for k in names:
            n = params[k].numel()
            step_k = delta[offset:offset + n].view_as(params[k])
            if self.check_finite and torch._C._functorch.peek_interpreter_stack() is None:
                check_finite_update("LSTMOptimizer", int(state["step"]) + 1, k, step_k, grads[k])
            new_params[k] = params[k] + step_k
            offset += n
        return new_params, new_state

    def forward(self, grads: Params, state: State, params: Params) -> tuple[Params, State]:
        """The update with the module's own weights (see :meth:`update`)."""
        return self.update(grads, state, params)

    def save(self, path: str | os.PathLike) -> None:
        """Write the configuration and weights (loadable with ``torch.load(weights_only=True)``)."""
        torch.save({"class": "LSTMOptimizer", "config": self.config(), "state_dict": self.state_dict()}, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> LSTMOptimizer:
        """Rebuild an optimizer written by :meth:`save`.

        Raises:
            CheckpointError: if the file is missing, damaged or not an LSTMOptimizer checkpoint.
        """
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError as exc:
            raise CheckpointError(f"No LSTMOptimizer checkpoint at {path}; pass the path LSTMOptimizer.save() "
                                  f"wrote to.") from exc
        except Exception as exc:  # truncated zips and refused pickles come in many types
            raise CheckpointError(f"{path} is damaged or not an LSTMOptimizer checkpoint ({type(exc).__name__} "
                                  f"from torch.load with weights_only=True); write one with "
                                  f"LSTMOptimizer.save().") from exc
        if not isinstance(blob, dict) or blob.get("class") != "LSTMOptimizer":
            raise CheckpointError(f"{path} is not an LSTMOptimizer checkpoint (got keys "
                                  f"{sorted(blob) if isinstance(blob, dict) else type(blob).__name__}); "
                                  f"write one with LSTMOptimizer.save().")
        optimizer = cls(**blob["config"])
        optimizer.load_state_dict(blob["state_dict"])
        return optimizer
