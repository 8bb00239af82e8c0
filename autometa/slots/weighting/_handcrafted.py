"""The weighting slot's base class and its hand-crafted filler (every example counts the same)."""

from __future__ import annotations

import abc
from typing import ClassVar

import torch
from torch import Tensor

from autometa.errors import UnsupportedFeatureError
from autometa.slots._base import Filler


class Weighting(Filler, abc.ABC):
    """Base class of the weighting slot's fillers: how much each training example counts.

    The pure method is :meth:`weighting` (per-sample weights, shape ``(n,)``, from the per-sample
    losses, the outputs and the targets of a batch, with the meta-parameters passed as ``meta``).
    Weights are on the scale of uniform weighting (1 each, mean 1 when normalised), and the
    training loss is ``mean(weights * losses)`` (:meth:`weighted_loss`).

    Two kinds of ω exist:

    - *persistent* ω, learned across batches (Meta-Weight-Net's network): :meth:`meta_params`;
    - *per-batch* ω, created for one batch and read back from its meta-gradient (L2RW's
      perturbations): :meth:`batch_meta` creates it, :meth:`weights_from_meta_gradient` turns the
      gradient of the clean-set loss after a one-step look-ahead into the batch's weights.

    :attr:`lookahead` says whether a trainer must run that one-step look-ahead on a clean batch
    (see :class:`autometa.learners.NoisyLabelTrainer`).
    """

    slot: ClassVar[str] = "weighting"
    #: whether training needs a differentiable one-step look-ahead evaluated on a clean batch
    lookahead: ClassVar[bool] = False

    @abc.abstractmethod
    def weighting(self, losses: Tensor, outputs: Tensor, targets: Tensor,
                  meta: dict[str, Tensor] | None = None) -> Tensor:
        """Per-sample weights ``(n,)`` for a batch whose per-sample losses are ``losses``."""

    def batch_meta(self, batch_size: int, dtype: torch.dtype = torch.float32,
                   device: torch.device | str | None = None) -> dict[str, Tensor]:
        """Fresh per-batch meta-parameters for a batch of ``batch_size`` examples (none by default)."""
        return {}

    def weights_from_meta_gradient(self, grads: dict[str, Tensor]) -> Tensor:
        """The batch's weights from the meta-gradient of the per-batch ω (fillers with per-batch ω only)."""
        raise UnsupportedFeatureError(f"{type(self).__name__} has no per-batch meta-parameters, so there are no "
                                      f"weights to read from their meta-gradient; call weighting() instead.")

    def weighted_loss(self, losses: Tensor, outputs: Tensor, targets: Tensor,
                      meta: dict[str, Tensor] | None = None) -> Tensor:
        """``mean(weights * losses)``; the weights see the losses and outputs detached, as in both papers:
        the classifier's gradient is ``mean(w_i * grad loss_i)``, and ω is not trained to shrink losses."""
        weights = self.weighting(losses.detach(), outputs.detach(), targets, meta)
        return (weights * losses).sum() / len(losses)


class UniformWeighting(Weighting):
    """Every example has weight 1: plain empirical risk minimisation with the slot's loss."""

    def weighting(self, losses, outputs, targets, meta=None):
        return torch.ones_like(losses)
