"""A learned filler of the loss slot: a small network whose weights are meta-learned (ML3)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from autometa.errors import ConfigError
from autometa.nets import functional_forward
from autometa.slots.loss._handcrafted import Loss

_ACTIVATIONS = {"softplus": nn.Softplus, "relu": nn.ReLU, "tanh": nn.Tanh}


class LearnedLoss(Loss):
    """A per-sample loss computed by a small network whose weights are the meta-parameters.

    For every output coordinate ``j`` of a sample, an MLP ``h`` maps the pair (prediction,
    target) to a number; the sample's loss is ``mean_j softplus(h(prediction_j, target_j))``, so
    it is never negative. Classification uses the pair (``log_softmax(outputs)_j``,
    ``one_hot(target)_j``), regression the pair (``outputs_j``, ``targets_j``).

    Sharing ``h`` across coordinates makes the loss independent of the number of classes and of
    how an episode numbers them (few-shot labels are arbitrary), and the family still holds the
    hand-crafted losses: cross-entropy is ``h(l, t) = -K t l`` (up to the softplus), label
    smoothing and the focal loss are other functions of the same pairs. The loss does not see
    the inputs ``x`` (the loss slot's ``loss(outputs, targets, meta)`` does not receive them),
    so ML3's variants that feed the input features are not covered.

    The network's weights are created from ``seed`` (not from torch's global generator) and read
    from ``meta`` with :func:`torch.func.functional_call`, so hypergradient estimators,
    ``torch.func.grad`` and ``vmap`` differentiate through them: a learner meta-learns them with
    ``learn=["loss"]`` (or ``["init", "loss"]``).

    Args:
        hidden: widths of the hidden layers of ``h`` (ML3 used two layers of 50).
        activation: ``softplus`` (smooth: second-order meta-gradients are exact and non-zero),
            ``relu`` or ``tanh``.
        seed: seeds the initial weights.

    Example::

        learner = MAML(MLP(64, 5, (32,)), loss=LearnedLoss(hidden=(50, 50)), learn=["init", "loss"])
        # config: learner: {name: maml, loss: {name: learned, hidden: [50, 50]}, learn: [loss]}

    References: Bechtle, Molchanov, Chebotar, Grefenstette, Righetti, Sukhatme & Meier 2021,
    "Meta Learning via Learned Loss" (ML3).
    """

    KINDS = ("classification", "regression")
    SPACE: ClassVar[dict] = {}

    def __init__(self, hidden: Sequence[int] = (50, 50), activation: str = "softplus", seed: int = 0):
        super().__init__()
        if isinstance(hidden, int) or not all(isinstance(w, int) and not isinstance(w, bool) and w > 0
                                              for w in hidden):
            raise ConfigError(f"The `hidden` of LearnedLoss must be a list of integer widths > 0 (e.g. [50, 50]). "
                              f"Got {hidden!r}.")
        if activation not in _ACTIVATIONS:
            raise ConfigError(f"The `activation` of LearnedLoss must be one of {sorted(_ACTIVATIONS)}. "
                              f"Got {activation!r}.")
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ConfigError(f"The `seed` of LearnedLoss must be an integer. Got {seed!r}.")
        self.hidden, self.activation, self.seed = tuple(hidden), activation, seed
        sizes = [2, *self.hidden, 1]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
            layers.append(nn.utils.skip_init(nn.Linear, a, b))  # initialised below, from our generator
            if i < len(sizes) - 2:
                layers.append(_ACTIVATIONS[activation]())
        self.net = nn.Sequential(*layers)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for layer in self.net:
                if isinstance(layer, nn.Linear):
                    # nn.Linear's default initialisation
                    bound = layer.in_features ** -0.5
                    layer.weight.copy_((torch.rand(layer.weight.shape, generator=generator) * 2 - 1) * bound)
                    layer.bias.copy_((torch.rand(layer.bias.shape, generator=generator) * 2 - 1) * bound)

    def pairs(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """The network's inputs ``(n, outputs, 2)``: (prediction, target) per output coordinate."""
        if targets.is_floating_point():  # regression
            prediction, target = outputs.reshape(len(outputs), -1), targets.reshape(len(targets), -1)
        else:
            prediction = torch.log_softmax(outputs, -1)
            # one-hot by comparison (vmap-safe, unlike F.one_hot's data-dependent size)
            classes = torch.arange(outputs.shape[-1], device=outputs.device)
            target = (targets.unsqueeze(-1) == classes).to(outputs.dtype)
        return torch.stack([prediction, target], -1)

    def loss(self, outputs, targets, meta=None):
        meta = self.resolve(meta)
        # computed in the outputs' dtype (a float64 model with float32 loss weights, e.g. in gradient checks);
        # the cast is differentiable, so the meta-gradient still reaches ``meta``
        params = {k[4:]: v.to(outputs.dtype) for k, v in meta.items() if k.startswith("net.")}
        if not params:
            raise ConfigError("LearnedLoss.loss got meta-parameters without its network's weights "
                              f"(net.*). Got keys {sorted(meta)}; pass this filler's meta_params().")
        h = functional_forward(self.net, params, self.pairs(outputs, targets)).squeeze(-1)
        return F.softplus(h).mean(-1)
