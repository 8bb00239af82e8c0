"""Differentiable siamese augmentation (DSA; Zhao & Bilen 2021), self-contained.

Every operation is differentiable with respect to the images, and draws its random parameters from
a :class:`torch.Generator` seeded by ``seed``: calling :func:`dsa` on a real batch and on a synthetic
batch with the same seed applies the same transformation to both (image ``i`` of each batch gets
the same draw; "siamese"). As in the reference code, mode ``"single"`` picks one operation family
per call (``color`` = brightness, saturation, contrast; ``crop``; ``cutout``; ``flip``; ``scale``;
``rotate``), mode ``"multiple"`` applies them all in turn. Digits get no flips (:func:`strategy_for`).

The resampling primitive (bilinear, zeros outside) is shared with the augmentation slot
(:func:`autometa.slots._image.affine_resample`), so the two slots warp images identically; the
operations differ because the methods do (DSA's draws and ranges are not AutoAugment's).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from autometa.errors import ConfigError
from autometa.slots._image import affine_resample

DEFAULT_STRATEGY = "color_crop_cutout_flip_scale_rotate"
DIGITS = ("mnist", "digits", "svhn", "usps")


@dataclass(frozen=True)
class DSAParams:
    """The magnitudes of the operations (the reference code's ``ParamDiffAug`` defaults)."""

    prob_flip: float = 0.5
    ratio_scale: float = 1.2
    ratio_rotate: float = 15.0
    ratio_crop_pad: float = 0.125
    ratio_cutout: float = 0.5
    brightness: float = 1.0
    saturation: float = 2.0
    contrast: float = 0.5


def strategy_for(dataset: str, strategy: str = DEFAULT_STRATEGY) -> str:
    """``strategy`` without ``flip`` for digit datasets (a flipped digit is another digit or none)."""
    if str(dataset).lower() in DIGITS:
        return "_".join(p for p in strategy.split("_") if p != "flip")
    return strategy


class _Draws:
    """Random draws for a batch of ``n``: one per image, or (``shared``) the first draw for every image,
    as the reference code's siamese mode does (``theta[:] = theta[0]``)."""

    def __init__(self, generator: torch.Generator, shared: bool):
        self.generator, self.shared = generator, shared

    def uniform(self, n: int, like: Tensor) -> Tensor:
        values = torch.rand(1 if self.shared else n, generator=self.generator, dtype=torch.float64)
        return values.expand(n).to(like)

    def randint(self, low: int, high: int, n: int) -> Tensor:
        return torch.randint(low, high, (1 if self.shared else n,), generator=self.generator).expand(n)


def rand_scale(x: Tensor, g: _Draws, p: DSAParams) -> Tensor:
    r = p.ratio_scale
    sx = g.uniform(len(x), x) * (r - 1 / r) + 1 / r
    sy = g.uniform(len(x), x) * (r - 1 / r) + 1 / r
    zero = torch.zeros_like(sx)
    theta = torch.stack([torch.stack([sx, zero, zero], 1), torch.stack([zero, sy, zero], 1)], 1)
    return affine_resample(x, theta.to(x.dtype))


def rand_rotate(x: Tensor, g: _Draws, p: DSAParams) -> Tensor:
    angle = (g.uniform(len(x), x) - 0.5) * 2 * p.ratio_rotate / 180 * math.pi
    c, s, zero = angle.cos(), angle.sin(), torch.zeros_like(angle)
    theta = torch.stack([torch.stack([c, -s, zero], 1), torch.stack([s, c, zero], 1)], 1)
    return affine_resample(x, theta.to(x.dtype))


def rand_flip(x: Tensor, g: _Draws, p: DSAParams) -> Tensor:
    flip = (g.uniform(len(x), x) < p.prob_flip).view(-1, 1, 1, 1)
    return torch.where(flip, x.flip(3), x)


def rand_color(x: Tensor, g: _Draws, p: DSAParams) -> Tensor:
    b = g.uniform(len(x), x).view(-1, 1, 1, 1)
    x = x + (b - 0.5) * p.brightness
    s = g.uniform(len(x), x).view(-1, 1, 1, 1)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (s * p.saturation) + mean
    c = g.uniform(len(x), x).view(-1, 1, 1, 1)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (c + p.contrast) + mean


def rand_crop(x: Tensor, g: _Draws, p: DSAParams) -> Tensor:
    """Translate by whole pixels (at most ``ratio_crop_pad`` of the side), zero-filling (pad-and-crop)."""
    n, _, h, w = x.shape
    sh, sw = int(h * p.ratio_crop_pad + 0.5), int(w * p.ratio_crop_pad + 0.5)
    tx, ty = g.randint(-sh, sh + 1, n), g.randint(-sw, sw + 1, n)
    rows = (torch.arange(h).view(1, h) + tx.view(n, 1) + 1).clamp(0, h + 1)  # (n, h) rows of the 1-padded image
    cols = (torch.arange(w).view(1, w) + ty.view(n, 1) + 1).clamp(0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1])
    batch = torch.arange(n).view(n, 1, 1)
    batch, rows, cols = batch.to(x.device), rows.to(x.device), cols.to(x.device)
    return padded.permute(0, 2, 3, 1)[batch, rows.view(n, h, 1), cols.view(n, 1, w)].permute(0, 3, 1, 2)


def rand_cutout(x: Tensor, g: _Draws, p: DSAParams) -> Tensor:
    """Zero a square of ``ratio_cutout`` of the side at a random centre."""
    n, _, h, w = x.shape
    ch, cw = int(h * p.ratio_cutout + 0.5), int(w * p.ratio_cutout + 0.5)
    ox, oy = g.randint(0, h + (1 - ch % 2), n), g.randint(0, w + (1 - cw % 2), n)
    rows = torch.arange(h).view(1, h)
    cols = torch.arange(w).view(1, w)
    start_r, start_c = (ox - ch // 2).clamp(min=0).view(n, 1), (oy - cw // 2).clamp(min=0).view(n, 1)
    stop_r = (ox - ch // 2 + ch - 1).clamp(max=h - 1).view(n, 1)
    stop_c = (oy - cw // 2 + cw - 1).clamp(max=w - 1).view(n, 1)
    in_r = (rows >= start_r) & (rows <= stop_r)
    in_c = (cols >= start_c) & (cols <= stop_c)
    mask = ~(in_r.view(n, h, 1) & in_c.view(n, 1, w))
    return x * mask.unsqueeze(1).to(x)


OPERATIONS = {"color": rand_color, "crop": rand_crop, "cutout": rand_cutout, "flip": rand_flip,
              "scale": rand_scale, "rotate": rand_rotate}


def check_strategy(strategy: str) -> list[str]:
    """The operation names of ``strategy`` (``"color_crop_cutout"``); an unknown name is a ConfigError."""
    parts = [s for s in str(strategy).split("_") if s]
    unknown = [s for s in parts if s not in OPERATIONS]
    if unknown or not parts:
        raise ConfigError(f"DSA strategy {strategy!r} has unknown operation(s) {unknown}; join names among "
                          f"{sorted(OPERATIONS)} with '_', e.g. {DEFAULT_STRATEGY!r}.")
    return parts


def dsa(x: Tensor, strategy: str = DEFAULT_STRATEGY, seed: int = 0, mode: str = "single", shared: bool = True,
        params: DSAParams = DSAParams()) -> Tensor:
    """Augment a batch ``(n, c, h, w)`` differentiably; the same ``seed`` gives the same transformation.

    Args:
        strategy: operation names joined by ``_`` (see :data:`OPERATIONS`).
        seed: seeds every random draw; pass the same seed for the real and the synthetic batch.
        mode: ``"single"`` (one operation family per call, drawn from the seed) or ``"multiple"``.
        shared: one draw for the whole batch (siamese matching: real and synthetic batches of any sizes
            get the same transformation), else one draw per image (training an evaluation network).

    Returns the augmented batch (a new tensor; ``x`` is not modified).

    References: Zhao & Bilen, "Dataset Condensation with Differentiable Siamese Augmentation", ICML 2021.
    """
    parts = check_strategy(strategy)
    if mode not in ("single", "multiple"):
        raise ConfigError(f"DSA mode must be 'single' or 'multiple'. Got {mode!r}.")
    generator = torch.Generator().manual_seed(int(seed))
    if mode == "single":
        parts = [parts[int(torch.randint(0, len(parts), (1,), generator=generator))]]
    draws = _Draws(generator, shared)
    for name in parts:
        x = OPERATIONS[name](x, draws, params)
    return x


# --- the reference's non-differentiable evaluation augmentation (DC's ``augment``/``get_daparam``) ---------------

DC_OPERATIONS = ("crop", "scale", "rotate", "noise")


@dataclass(frozen=True)
class DCAugParams:
    """The magnitudes of Zhao et al.'s evaluation augmentation (``get_daparam``): crop pads by 4 pixels,
    scale draws each side's factor in [0.8, 1.2], rotate an integer angle in [-45, 45) degrees, noise adds
    0.001 N(0, 1)."""

    crop: int = 4
    scale: float = 0.2
    rotate: int = 45
    noise: float = 0.001


def check_dc_strategy(strategy: str) -> list[str]:
    """The operation names of a DC-augmentation ``strategy`` (``"crop_scale_rotate"``); ConfigError otherwise."""
    parts = [s for s in str(strategy).split("_") if s]
    unknown = [s for s in parts if s not in DC_OPERATIONS]
    if unknown or not parts:
        raise ConfigError(f"DC augmentation strategy {strategy!r} has unknown operation(s) {unknown}; join names "
                          f"among {list(DC_OPERATIONS)} with '_', e.g. 'crop_scale_rotate' (the reference's MNIST "
                          f"evaluation).")
    return parts


def _gather(x: Tensor, rows: Tensor, cols: Tensor, valid: Tensor, fill: Tensor) -> Tensor:
    """``out[i, :, r, c] = x[i, :, rows[i, r], cols[i, c]]`` where ``valid[i, r, c]``, else ``fill`` (per channel)."""
    n, _, h, w = x.shape
    batch = torch.arange(n, device=x.device).view(n, 1, 1)
    picked = x.permute(0, 2, 3, 1)[batch, rows.clamp(0, h - 1).view(n, -1, 1),
                                   cols.clamp(0, w - 1).view(n, 1, -1)].permute(0, 3, 1, 2)
    return torch.where(valid.unsqueeze(1), picked, fill.view(1, -1, 1, 1))


def dc_crop(x: Tensor, r: Tensor, q: Tensor, crop: int, fill: Tensor) -> Tensor:
    """Image ``i`` padded by ``crop`` pixels of ``fill`` (per channel), then the window at row ``r[i]``,
    column ``q[i]`` of the padded image (the reference's ``cropfun``)."""
    n, _, h, w = x.shape
    rows = torch.arange(h).view(1, h) + r.view(n, 1) - crop
    cols = torch.arange(w).view(1, w) + q.view(n, 1) - crop
    valid = ((rows >= 0) & (rows < h)).view(n, h, 1) & ((cols >= 0) & (cols < w)).view(n, 1, w)
    return _gather(x, rows.to(x.device), cols.to(x.device), valid.to(x.device), fill)


def dc_scale(x: Tensor, heights: Tensor, widths: Tensor) -> Tensor:
    """Image ``i`` resized (nearest) to ``heights[i] x widths[i]``, centred on a zero canvas of side
    ``max(h, w, heights[i], widths[i])``, and the centre ``h x w`` cut (the reference's ``scalefun``)."""
    n, channels, h, w = x.shape
    sh, sw = heights.view(n, 1), widths.view(n, 1)
    side = torch.maximum(torch.maximum(sh, sw), torch.tensor(max(h, w)))
    # output pixel -> canvas pixel -> resized-image pixel -> source pixel (nearest: floor(i * in / out))
    rows = torch.arange(h).view(1, h) + (side - h) // 2 - (side - sh) // 2
    cols = torch.arange(w).view(1, w) + (side - w) // 2 - (side - sw) // 2
    valid = ((rows >= 0) & (rows < sh)).view(n, h, 1) & ((cols >= 0) & (cols < sw)).view(n, 1, w)
    src_r = torch.floor(rows.double() * h / sh).long()
    src_c = torch.floor(cols.double() * w / sw).long()
    return _gather(x, src_r.to(x.device), src_c.to(x.device), valid.to(x.device),
                   torch.zeros(channels, dtype=x.dtype, device=x.device))


def dc_augment(x: Tensor, strategy: str = "crop_scale_rotate", seed: int = 0,
               params: DCAugParams = DCAugParams()) -> Tensor:
    """Zhao et al.'s evaluation augmentation, vectorised: every image gets ONE operation drawn uniformly from
    ``strategy``. ``crop``: pad by ``crop`` pixels with the batch's per-channel mean and cut a window at an
    offset drawn in ``[0, 2 crop)`` (the reference's draw); ``scale``: nearest-neighbour resize of the height
    and width by factors in ``[1 - scale, 1 + scale]``, centred on a zero canvas, centre crop; ``rotate``:
    an integer angle in ``[-rotate, rotate)`` degrees about the centre, filled with the mean; ``noise``:
    ``+ noise * N(0, 1)``. Not differentiable in the draws, not siamese: this trains evaluation networks.

    Differences from the reference, by design: rotation is bilinear (the reference rotates each image with
    scipy's cubic spline on the CPU, which dominates its evaluation time); draws come from a seeded torch
    generator instead of numpy's global stream.

    References: Zhao, Mopuri & Bilen, "Dataset Condensation with Gradient Matching", ICLR 2021 (code:
    ``utils.augment``, ``utils.get_daparam``).
    """
    parts = check_dc_strategy(strategy)
    n, channels, h, w = x.shape
    g = torch.Generator().manual_seed(int(seed))
    choice = torch.randint(0, len(parts), (n,), generator=g)
    mean = x.detach().mean(dim=(0, 2, 3))
    out = x
    for k, name in enumerate(parts):
        chosen = torch.nonzero(choice == k).view(-1)
        if len(chosen) == 0:
            continue
        m = len(chosen)
        xs = x[chosen.to(x.device)]
        if name == "crop":
            r, q = (torch.randint(0, 2 * params.crop, (m,), generator=g) for _ in range(2))
            new = dc_crop(xs, r, q, params.crop, mean)
        elif name == "scale":
            fh = torch.empty(m, dtype=torch.float64).uniform_(1 - params.scale, 1 + params.scale, generator=g)
            fw = torch.empty(m, dtype=torch.float64).uniform_(1 - params.scale, 1 + params.scale, generator=g)
            new = dc_scale(xs, (fh * h).long().clamp(min=1), (fw * h).long().clamp(min=1))  # both int(f * h)
        elif name == "rotate":
            angle = torch.randint(-params.rotate, params.rotate, (m,), generator=g).double() * math.pi / 180
            c, s, zero = angle.cos(), angle.sin(), torch.zeros(m, dtype=torch.float64)
            theta = torch.stack([torch.stack([c, -s, zero], 1), torch.stack([s, c, zero], 1)], 1).to(x)
            fill = mean.mean()
            new = affine_resample(xs - fill, theta) + fill
        else:  # noise
            new = xs + params.noise * torch.randn(xs.shape, generator=g, dtype=torch.float64).to(x)
        out = out.index_copy(0, chosen.to(x.device), new)
    return out
