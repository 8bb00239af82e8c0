"""Image primitives that more than one slot uses (a slot never imports another slot; both import this)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def affine_resample(x: Tensor, theta: Tensor) -> Tensor:
    """Resample ``x`` at ``theta @ [u, v, 1]`` (normalised coordinates), zeros outside, bilinear: the warp of
    the augmentation slot's geometric operations and of the data slot's DSA."""
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
