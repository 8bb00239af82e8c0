"""Learned fillers of the weighting slot: Meta-Weight-Net (a loss -> weight network) and L2RW."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn
from torch.func import functional_call

from autometa.errors import ConfigError
from autometa.slots.weighting._handcrafted import Weighting


def _positive_int(owner: str, name: str, value) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"The `{name}` of {owner} must be an integer >= 1. Got {value!r}.")
    return value


class MetaWeightNet(Weighting):
    """A small network mapping a sample's loss to its weight in (0, 1): ``sigmoid(MLP(loss))``.

    ω is the network's weights, learned by the meta-gradient of the loss on a small clean set
    after a one-step look-ahead of the classifier trained with the weighted loss (Shu et al.):
    a trainer builds that look-ahead (:class:`autometa.learners.NoisyLabelTrainer`). The
    network reads its weights from ``meta`` through ``functional_call``, so estimators see ω as
    an input.

    Args:
        hidden: the hidden width (100 in the paper: a 1-100-1 network).
        normalize: rescale the batch's weights to mean 1 (the first version of the paper's code
            normalised by the sum; the later one does not).
        seed: seeds the network's initialisation (no global random state is touched).

    References: Shu et al. 2019, "Meta-Weight-Net: Learning an Explicit Mapping for Sample Weighting".
    """

    lookahead = True
    SPACE: ClassVar[dict] = {"hidden": {"int": [10, 200], "log": True}}

    def __init__(self, hidden: int = 100, normalize: bool = False, seed: int = 0):
        super().__init__()
        self.hidden = _positive_int("MetaWeightNet", "hidden", hidden)
        if not isinstance(normalize, bool):
            raise ConfigError(f"The `normalize` of MetaWeightNet must be true or false. Got {normalize!r}.")
        self.normalize, self.seed = normalize, int(seed)
        self.net = nn.Sequential(nn.Linear(1, self.hidden), nn.ReLU(), nn.Linear(self.hidden, 1))
        generator = torch.Generator().manual_seed(self.seed)
        with torch.no_grad():  # nn.Linear's default initialisation, drawn from our own generator
            for layer in (self.net[0], self.net[2]):
                bound = 1.0 / layer.in_features ** 0.5
                layer.weight.uniform_(-bound, bound, generator=generator)
                layer.bias.uniform_(-bound, bound, generator=generator)

    def weighting(self, losses, outputs, targets, meta=None):
        meta = self.resolve(meta)
        params = {k.removeprefix("net."): v for k, v in meta.items() if k.startswith("net.")}
        weights = torch.sigmoid(functional_call(self.net, params, (losses.unsqueeze(-1),))).squeeze(-1)
        if self.normalize:
            total = weights.sum()
            weights = weights * (len(weights) / total.clamp_min(torch.finfo(weights.dtype).tiny))
        return weights

    @torch.no_grad()
    def curve(self, max_loss: float, points: int = 101) -> tuple[Tensor, Tensor]:
        """The learned weighting function on a grid: ``(losses, weights)`` for losses in [0, max_loss]."""
        dtype = next(self.parameters()).dtype
        losses = torch.linspace(0.0, float(max_loss), points, dtype=dtype)
        params = {k.removeprefix("net."): v for k, v in self.meta_params().items()}
        return losses, torch.sigmoid(functional_call(self.net, params, (losses.unsqueeze(-1),))).squeeze(-1)


class L2RW(Weighting):
    """Learning to reweight: per-batch weights from the gradient of the clean-set loss with respect to
    per-example perturbations ε of the training loss, with no weighting network.

    For a batch, ε starts at 0 (:meth:`batch_meta`); the look-ahead step of the classifier minimises
    ``mean(ε_i * loss_i)``; the weights are ``max(-∂L_clean/∂ε_i, 0)``, normalised to mean 1
    (Ren et al. normalise to sum 1 and sum the weighted losses: the same update). A batch whose
    every derivative is non-negative gets all-zero weights, as in the paper.

    References: Ren, Zeng, Yang & Urtasun 2018, "Learning to Reweight Examples for Robust Deep Learning".
    """

    lookahead = True

    def batch_meta(self, batch_size, dtype=torch.float32, device=None):
        return {"eps": torch.zeros(batch_size, dtype=dtype, device=device, requires_grad=True)}

    def weighting(self, losses, outputs, targets, meta=None):
        if meta is None or "eps" not in meta:
            # outside a look-ahead (no per-batch ω yet) every example counts the same
            return torch.ones_like(losses)
        return meta["eps"]

    def weights_from_meta_gradient(self, grads):
        if "eps" not in grads:
            raise ConfigError(f"L2RW needs the meta-gradient of its per-batch `eps`. Got keys {sorted(grads)}; "
                              f"pass the gradient of the clean loss with respect to batch_meta(...)['eps'].")
        weights = torch.clamp(-grads["eps"].detach(), min=0)
        total = weights.sum()
        if total <= 0:
            return torch.zeros_like(weights)
        return weights * (len(weights) / total)
