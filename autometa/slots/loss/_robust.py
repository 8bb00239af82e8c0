"""Noise-robust hand-crafted losses. Importing this module registers ``generalized_cross_entropy``.

(Kept apart from ``_handcrafted.py`` so it merges on its own; the loss package's ``__init__`` may
import it to make the name available without this import.)
"""

from __future__ import annotations

from typing import ClassVar

import torch

from autometa.errors import ConfigError
from autometa.slots._base import register_filler
from autometa.slots.loss._handcrafted import Loss


class GeneralizedCrossEntropy(Loss):
    """``(1 - p_y^q) / q``: cross-entropy as q -> 0, mean absolute error at q = 1; robust to label noise.

    Args:
        q: the exponent, in (0, 1] (0.7 in the paper).

    References: Zhang & Sabuncu 2018, "Generalized Cross Entropy Loss for Training Deep Neural Networks
    with Noisy Labels".
    """

    SPACE: ClassVar[dict] = {"q": {"float": [0.1, 1.0]}}

    def __init__(self, q: float = 0.7):
        super().__init__()
        if not isinstance(q, (int, float)) or isinstance(q, bool) or not 0 < q <= 1:
            raise ConfigError(f"The `q` of GeneralizedCrossEntropy must be a float in (0, 1]. Got {q!r}; "
                              f"use cross_entropy for q = 0.")
        self.q = float(q)

    def loss(self, outputs, targets, meta=None):
        log_p = torch.log_softmax(outputs, -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        return (1 - torch.exp(self.q * log_p)) / self.q


register_filler("generalized_cross_entropy", GeneralizedCrossEntropy)
