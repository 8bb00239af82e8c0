"""The loss slot: the loss an inner loop minimises (per-sample losses, ``meta`` passed explicitly).

Hand-crafted: :class:`CrossEntropy`, :class:`LabelSmoothing`, :class:`FocalLoss`, :class:`MSE`;
:class:`GeneralizedCrossEntropy` (noise-robust); a user's callable through :class:`CallableLoss`.
Learned: :class:`LearnedLoss` (ML3). Config names: ``cross_entropy``, ``label_smoothing``, ``focal``,
``mse``, ``generalized_cross_entropy``, ``learned``.
"""

from autometa.slots._base import register_filler
from autometa.slots.loss._handcrafted import MSE, CallableLoss, CrossEntropy, FocalLoss, LabelSmoothing, Loss
from autometa.slots.loss._learned import LearnedLoss
from autometa.slots.loss._robust import GeneralizedCrossEntropy  # registers itself

for _name, _cls in {"cross_entropy": CrossEntropy, "label_smoothing": LabelSmoothing, "focal": FocalLoss,
                    "mse": MSE, "learned": LearnedLoss}.items():
    register_filler(_name, _cls)


def default_loss(kind: str) -> Loss:
    """Cross-entropy for classification, mean squared error for regression."""
    return CrossEntropy() if kind == "classification" else MSE()


__all__ = ["MSE", "CallableLoss", "CrossEntropy", "FocalLoss", "GeneralizedCrossEntropy", "LabelSmoothing",
           "LearnedLoss", "Loss", "default_loss"]
