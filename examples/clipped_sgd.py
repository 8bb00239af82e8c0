"""A user's own optimizer filler, written outside autometa: gradient descent with clipped gradients.

Nothing in autometa changes for it. Registering the class makes ``clipped_sgd`` a name that
configs can use wherever an optimizer filler goes::

    # experiments/my_maml.yaml
    learner: {name: maml, optimizer: {name: clipped_sgd, lr: 0.4, max_norm: 1.0}}

and the command line imports this file first::

    autometa run experiments/my_maml.yaml --plugin examples/clipped_sgd.py
    autometa sweep experiments/my_maml.yaml --space space.yaml --plugin examples/clipped_sgd.py
    autometa compare my_comparison.yaml --plugin examples/clipped_sgd.py

(``space.yaml`` can search ``learner.optimizer.max_norm``: :attr:`ClippedSGD.SPACE` advertises it.)
From Python, import the file before building the learner, or pass the filler itself:
``MAML(model, optimizer=ClippedSGD(lr=0.4))``. Check it with autometa's conformance suite for fillers::

    from autometa.testing import check_filler
    check_filler(lambda: ClippedSGD(lr=0.1, max_norm=1.0), reference=clipped_sgd_reference(0.1, 1.0))

References: Pascanu, Mikolov & Bengio 2013, "On the difficulty of training recurrent neural
networks" (gradient norm clipping).
"""

from __future__ import annotations

import torch

from autometa.errors import ConfigError
from autometa.slots import register_filler
from autometa.slots.optimizer import UpdateRule


class ClippedSGD(UpdateRule):
    """``params - lr * g * min(1, max_norm / ||g||)``, with ``||g||`` the norm of all gradients together.

    The same arithmetic as ``torch.nn.utils.clip_grad_norm_(params, max_norm)`` followed by
    ``torch.optim.SGD(params, lr).step()`` (clip_grad_norm_ adds 1e-6 to the norm; so does this).
    Pure and out of place, so MAML can differentiate through it (second order included), and
    ``lr`` may be a tensor that requires grad (then it is a meta-parameter).

    Args:
        lr: the step size (> 0).
        max_norm: the largest gradient norm a step uses (> 0).
    """

    SPACE = {"lr": {"float": [1e-4, 1.0], "log": True}, "max_norm": {"float": [0.01, 100.0], "log": True}}

    def __init__(self, lr=0.01, max_norm: float = 1.0):
        super().__init__()
        for name, value in (("lr", lr), ("max_norm", max_norm)):
            number = float(value.detach()) if isinstance(value, torch.Tensor) else value
            if not isinstance(number, (int, float)) or isinstance(number, bool) or number <= 0:
                raise ConfigError(f"The `{name}` of ClippedSGD must be a float > 0. Got {value!r} instead.")
        self.lr, self.max_norm = lr, float(max_norm)

    def init(self, params, meta=None):
        return {"step": torch.zeros((), dtype=torch.float64)}

    def update(self, grads, state, params, meta=None):
        lr = self.hyper(meta, "lr")
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads.values()]))
        scale = torch.clamp(self.max_norm / (norm + 1e-6), max=1.0)
        new = {k: p - lr * scale * grads[k] for k, p in params.items()}
        return new, {"step": state["step"] + 1}


register_filler("clipped_sgd", ClippedSGD)


def clipped_sgd_reference(lr: float, max_norm: float):
    """The plain-torch equivalent, in the form ``check_filler(reference=...)`` takes."""

    class Clipped(torch.optim.SGD):
        def step(self, closure=None):
            torch.nn.utils.clip_grad_norm_([p for g in self.param_groups for p in g["params"]], max_norm)
            return super().step(closure)

    return lambda params: Clipped(params, lr=lr)
