"""Image operations of the augmentation search spaces, in pure PyTorch.

Every operation is ``op(x, magnitude, generator=None) -> x'`` on a batch of images ``x`` of shape
``(B, C, H, W)`` with values in ``[0, 1]`` (C = 1 grey or 3 colour). ``magnitude`` is a tensor of
shape ``(B,)`` (or a scalar, broadcast) in ``[-1, 1]``: its absolute value is the strength, its
sign the direction for the operations that have one (shear, translate, rotate, and the
enhancement factors of contrast, brightness, sharpness, colour), as in AutoAugment and
RandAugment, which draw the sign at random. ``op(x, 0) == x`` for every operation with a
magnitude; ``invert``, ``auto_contrast`` and ``equalize`` have none and ignore it.

Gradients, so that a learned policy can be differentiated through (DADA):

- geometric operations (``affine_grid`` + bilinear ``grid_sample``) and the colour blends
  (brightness, contrast, sharpness, colour: ``x + (factor - 1) * (x - degenerate)``, clamped to
  [0, 1]) are differentiable in ``x`` and exactly in ``magnitude``;
- ``solarize``, ``posterize`` and ``cutout`` are piecewise constant in their magnitude: their
  magnitude gets the straight-through gradient of DADA (``out + m - stop_gradient(m)``: d out /
  d m = 1 for every pixel); ``posterize`` and ``equalize``, which are piecewise constant in ``x``
  too, pass the gradient of ``x`` straight through (identity);
- :func:`straight_through_magnitude` turns any operation into DADA's straight-through form (the
  option ``exact_magnitude_gradient=False`` of the DADA filler).

Magnitude ranges follow AutoAugment / Fast AutoAugment / DADA at strength 1: shear 0.3, translate
45% of the side, rotate 30°, solarize threshold down to 0, posterize down to 4 bits, enhancement
factors 1 ± 0.9, cutout side 20% of the image (:data:`RANGES`).

References: Cubuk et al. 2019 (AutoAugment); Lim et al. 2019 (Fast AutoAugment); Li et al. 2020
(DADA); PIL's ``ImageOps`` / ``ImageEnhance`` for the colour operations.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from autometa.slots._image import affine_resample

#: strength-1 values of each operation's parameter
RANGES = {"shear": 0.3, "translate": 0.45, "rotate": 30.0, "enhance": 0.9, "posterize_bits": 4, "cutout": 0.2}

Op = Callable[..., Tensor]


def _per_image(magnitude, x: Tensor) -> Tensor:
    """``magnitude`` as a ``(B,)`` tensor of ``x``'s dtype and device."""
    m = torch.as_tensor(magnitude, dtype=x.dtype, device=x.device)
    return m.expand(x.shape[0]) if m.dim() == 0 else m


def _straight_through(out: Tensor, m: Tensor) -> Tensor:
    """``out`` with d out / d m = 1 at every pixel (DADA's straight-through magnitude gradient)."""
    return out + (m - m.detach()).view(-1, 1, 1, 1)


# ----------------------------------------------------------------------------- geometric

def _theta(rows: list[list[Tensor]]) -> Tensor:
    return torch.stack([torch.stack(r, -1) for r in rows], -2)


def shear_x(x: Tensor, magnitude, generator=None) -> Tensor:
    """Shear along the width about the centre: the pixel at (u, v) shows the input at (u + s v, v),
    ``s = 0.3 * magnitude``."""
    s = RANGES["shear"] * _per_image(magnitude, x)
    one, zero = torch.ones_like(s), torch.zeros_like(s)
    return affine_resample(x, _theta([[one, s, zero], [zero, one, zero]]))


def shear_y(x: Tensor, magnitude, generator=None) -> Tensor:
    """Shear along the height about the centre, ``s = 0.3 * magnitude``."""
    s = RANGES["shear"] * _per_image(magnitude, x)
    one, zero = torch.ones_like(s), torch.zeros_like(s)
    return affine_resample(x, _theta([[one, zero, zero], [s, one, zero]]))


def translate_x(x: Tensor, magnitude, generator=None) -> Tensor:
    """Shift along the width by ``0.45 * magnitude`` of the width (zeros enter)."""
    t = 2 * RANGES["translate"] * _per_image(magnitude, x)
    one, zero = torch.ones_like(t), torch.zeros_like(t)
    return affine_resample(x, _theta([[one, zero, t], [zero, one, zero]]))


def translate_y(x: Tensor, magnitude, generator=None) -> Tensor:
    """Shift along the height by ``0.45 * magnitude`` of the height (zeros enter)."""
    t = 2 * RANGES["translate"] * _per_image(magnitude, x)
    one, zero = torch.ones_like(t), torch.zeros_like(t)
    return affine_resample(x, _theta([[one, zero, zero], [zero, one, t]]))


def rotate(x: Tensor, magnitude, generator=None) -> Tensor:
    """Rotate about the centre by ``30° * magnitude`` (zeros enter at the corners)."""
    a = math.radians(RANGES["rotate"]) * _per_image(magnitude, x)
    c, s, zero = torch.cos(a), torch.sin(a), torch.zeros_like(a)
    return affine_resample(x, _theta([[c, -s, zero], [s, c, zero]]))


# ----------------------------------------------------------------------------- colour blends

def _blend(x: Tensor, degenerate: Tensor, magnitude) -> Tensor:
    """PIL's ImageEnhance: ``degenerate + factor (x - degenerate)`` with ``factor = 1 + 0.9 m``, written
    ``x + (factor - 1)(x - degenerate)`` so that ``m = 0`` returns ``x`` bit for bit; clamped to [0, 1]."""
    m = RANGES["enhance"] * _per_image(magnitude, x).view(-1, 1, 1, 1)
    return (x + m * (x - degenerate)).clamp(0.0, 1.0)


def _grey(x: Tensor) -> Tensor:
    """Luminance (ITU-R 601-2, as PIL's ``convert('L')``), shape ``(B, 1, H, W)``."""
    if x.shape[1] == 1:
        return x
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * weights).sum(1, keepdim=True)


def brightness(x: Tensor, magnitude, generator=None) -> Tensor:
    """Blend with black: factor ``1 + 0.9 m``."""
    return _blend(x, torch.zeros_like(x), magnitude)


def contrast(x: Tensor, magnitude, generator=None) -> Tensor:
    """Blend with the image's mean grey level: factor ``1 + 0.9 m``."""
    return _blend(x, _grey(x).mean(dim=(1, 2, 3), keepdim=True).expand_as(x), magnitude)


def color(x: Tensor, magnitude, generator=None) -> Tensor:
    """Blend with the grey version (saturation): factor ``1 + 0.9 m``; the identity on grey images."""
    return _blend(x, _grey(x).expand_as(x), magnitude)


_SMOOTH = [[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]  # PIL's ImageFilter.SMOOTH, / 13


def sharpness(x: Tensor, magnitude, generator=None) -> Tensor:
    """Blend with PIL's smoothed image (border pixels kept): factor ``1 + 0.9 m`` (> 1 sharpens)."""
    channels = x.shape[1]
    kernel = torch.tensor(_SMOOTH, dtype=x.dtype, device=x.device).div(13.0).expand(channels, 1, 3, 3)
    smooth = F.conv2d(x, kernel, padding=1, groups=channels)
    border = torch.ones_like(x[:1, :1], dtype=torch.bool)
    border[..., 1:-1, 1:-1] = False
    return _blend(x, torch.where(border, x, smooth), magnitude)


# ----------------------------------------------------------------------------- pixel-value maps

def invert(x: Tensor, magnitude=None, generator=None) -> Tensor:
    """``1 - x`` (no magnitude)."""
    return 1.0 - x


def auto_contrast(x: Tensor, magnitude=None, generator=None) -> Tensor:
    """Stretch each channel linearly so that its darkest pixel is 0 and its brightest 1 (no magnitude);
    a constant channel is left alone, as in PIL."""
    low = x.amin(dim=(2, 3), keepdim=True)
    high = x.amax(dim=(2, 3), keepdim=True)
    span = high - low
    flat = span <= 0
    return torch.where(flat, x, (x - low) / torch.where(flat, torch.ones_like(span), span))


def equalize(x: Tensor, magnitude=None, generator=None) -> Tensor:
    """PIL's histogram equalisation of each channel on 256 levels (no magnitude); the gradient of
    ``x`` passes straight through."""
    b, c = x.shape[:2]
    levels = (x.detach() * 255).round().clamp(0, 255).long().flatten(2)             # (B, C, N)
    hist = torch.zeros(b, c, 256, dtype=x.dtype, device=x.device).scatter_add_(
        2, levels, torch.ones_like(levels, dtype=x.dtype))
    n = levels.shape[-1]
    # PIL: step = (pixels - count of the last non-empty level) // 255; lut[i] = (cumsum before i + step // 2) // step
    last = hist.gather(2, (255 - (hist.flip(-1) > 0).to(torch.int64).argmax(-1, keepdim=True)))
    step = torch.div(n - last, 255, rounding_mode="floor")
    before = hist.cumsum(-1) - hist
    lut = torch.div(before + torch.div(step, 2, rounding_mode="floor"), step.clamp_min(1), rounding_mode="floor")
    lut = lut.clamp(max=255) / 255.0
    out = lut.gather(2, levels).view_as(x)
    out = torch.where((step > 0).view(b, c, 1, 1), out, x.detach())
    return x + (out - x).detach()


def solarize(x: Tensor, magnitude, generator=None) -> Tensor:
    """Invert the pixels above the threshold ``1 - |m|`` (none at m = 0); straight-through in ``m``."""
    m = _per_image(magnitude, x)
    threshold = (1.0 - m.detach().abs()).view(-1, 1, 1, 1)
    return _straight_through(torch.where(x > threshold, 1.0 - x, x), m)


def posterize(x: Tensor, magnitude, generator=None) -> Tensor:
    """Keep ``8 - round(4 |m|)`` bits of each 8-bit pixel (``x`` itself at m = 0); straight-through in
    ``x`` and ``m``."""
    m = _per_image(magnitude, x)
    dropped = (RANGES["posterize_bits"] * m.detach().abs()).round().view(-1, 1, 1, 1)
    unit = 2.0 ** dropped
    quantised = torch.floor((x.detach() * 255).round() / unit) * unit / 255.0
    out = torch.where(dropped > 0, quantised, x.detach())
    return _straight_through(x + (out - x).detach(), m)


def cutout(x: Tensor, magnitude, generator=None, fill: float = 0.5) -> Tensor:
    """Fill a square of side ``round(0.2 |m| min(H, W))`` pixels, centred at a pixel drawn from
    ``generator`` and clipped at the border, with ``fill``; straight-through in ``m``."""
    m = _per_image(magnitude, x)
    b, _, h, w = x.shape
    side = (RANGES["cutout"] * m.detach().abs() * min(h, w)).round()
    cy = torch.randint(0, h, (b,), generator=generator).to(x.device)
    cx = torch.randint(0, w, (b,), generator=generator).to(x.device)
    return _straight_through(square_fill(x, cy, cx, side, fill), m)


def square_fill(x: Tensor, cy: Tensor, cx: Tensor, side: Tensor, fill: float) -> Tensor:
    """``x`` with the square of side ``side[i]`` centred at ``(cy[i], cx[i])`` (clipped) set to ``fill``."""
    h, w = x.shape[-2:]
    half = (side / 2).view(-1, 1, 1)
    rows = torch.arange(h, device=x.device, dtype=x.dtype).view(1, -1, 1)
    cols = torch.arange(w, device=x.device, dtype=x.dtype).view(1, 1, -1)
    low_y = cy.to(x.dtype).view(-1, 1, 1) - torch.floor(half)
    low_x = cx.to(x.dtype).view(-1, 1, 1) - torch.floor(half)
    side = side.view(-1, 1, 1)
    inside = (rows >= low_y) & (rows < low_y + side) & (cols >= low_x) & (cols < low_x + side)
    return torch.where(inside.unsqueeze(1), torch.full_like(x, fill), x)


def identity(x: Tensor, magnitude=None, generator=None) -> Tensor:
    """``x`` unchanged (RandAugment's and TrivialAugment's "identity")."""
    return x


# ----------------------------------------------------------------------------- registry

OPS: dict[str, Op] = {
    "identity": identity, "shear_x": shear_x, "shear_y": shear_y, "translate_x": translate_x,
    "translate_y": translate_y, "rotate": rotate, "auto_contrast": auto_contrast, "invert": invert,
    "equalize": equalize, "solarize": solarize, "posterize": posterize, "contrast": contrast,
    "color": color, "brightness": brightness, "sharpness": sharpness, "cutout": cutout,
}
#: operations whose magnitude has a direction (a random sign is drawn for them)
SIGNED = frozenset({"shear_x", "shear_y", "translate_x", "translate_y", "rotate", "contrast", "color",
                    "brightness", "sharpness"})
#: operations without a magnitude
NO_MAGNITUDE = frozenset({"identity", "auto_contrast", "invert", "equalize"})
#: operations whose magnitude gradient is exact (the others are straight-through)
EXACT_MAGNITUDE = frozenset(SIGNED)
#: DADA's (and Fast AutoAugment's) 15 operations; ``color`` is the identity on grey images
DADA_OPS = ("shear_x", "shear_y", "translate_x", "translate_y", "rotate", "auto_contrast", "invert", "equalize",
            "solarize", "posterize", "contrast", "color", "brightness", "sharpness", "cutout")
#: DADA's operations for grey images (``color`` dropped: it would be a second identity)
GREY_OPS = tuple(op for op in DADA_OPS if op != "color")
#: RandAugment's 14 operations (Cubuk et al. 2020) and TrivialAugment's (identity included)
RANDAUGMENT_OPS = ("identity", "auto_contrast", "equalize", "rotate", "solarize", "color", "posterize",
                   "contrast", "brightness", "sharpness", "shear_x", "shear_y", "translate_x", "translate_y")


def straight_through_magnitude(op: Op) -> Op:
    """``op`` with DADA's straight-through magnitude gradient (d out / d m = 1 at every pixel) in place of
    its exact one."""

    def wrapped(x: Tensor, magnitude, generator=None) -> Tensor:
        m = _per_image(magnitude, x)
        return _straight_through(op(x, m.detach(), generator), m)

    wrapped.__name__ = getattr(op, "__name__", "op")
    return wrapped
