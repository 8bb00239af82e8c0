"""The augmentation slot's base class and its hand-crafted fillers.

Every filler maps a batch of images and labels to an augmented batch:
``augment(x, y, meta=None, generator=None) -> (x, y)``, images ``(B, C, H, W)`` in ``[0, 1]``,
all randomness drawn from ``generator`` (same generator state, same batch), ω in ``meta``.
"""

from __future__ import annotations

import abc
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from autometa.errors import ConfigError
from autometa.slots._base import Filler
from autometa.slots.augmentation._ops import OPS, RANDAUGMENT_OPS, SIGNED, square_fill


def check_images(owner: str, x: Tensor) -> None:
    """Raise a :class:`ConfigError` unless ``x`` is a floating batch of images ``(B, C, H, W)``."""
    if not isinstance(x, Tensor) or x.dim() != 4 or not x.is_floating_point():
        raise ConfigError(f"{owner} augments float images of shape (batch, channels, height, width). Got "
                          f"{type(x).__name__} of shape {tuple(getattr(x, 'shape', ()))} and dtype "
                          f"{getattr(x, 'dtype', None)}; reshape flat inputs to images first.")


def check_ops(owner: str, ops) -> tuple[str, ...]:
    """``ops`` as a tuple of known operation names (a ConfigError naming the unknown ones)."""
    if isinstance(ops, str) or not isinstance(ops, (list, tuple)) or not ops:
        raise ConfigError(f"The `ops` of {owner} must be a non-empty list of operation names. Got {ops!r}.")
    unknown = [op for op in ops if op not in OPS]
    if unknown:
        raise ConfigError(f"{owner}: unknown operation(s) {unknown}. Choose among {sorted(OPS)}.")
    return tuple(ops)


def apply_per_image(x: Tensor, ops: tuple[str, ...], choice: Tensor, magnitude: Tensor,
                    generator: torch.Generator | None) -> Tensor:
    """Image ``i`` transformed by ``OPS[ops[choice[i]]]`` at ``magnitude[i]`` (each operation runs once, on
    the images that chose it, in the order of ``ops``, so the generator is used reproducibly)."""
    out = x
    for index, name in enumerate(ops):
        rows = torch.nonzero(choice == index).flatten()
        if len(rows) == 0 or name == "identity":
            continue
        out = out.index_put((rows,), OPS[name](x[rows], magnitude[rows], generator))
    return out


def random_signs(ops: tuple[str, ...], choice: Tensor, generator: torch.Generator | None,
                 dtype: torch.dtype) -> Tensor:
    """±1 per image for signed operations (drawn with probability 1/2), +1 for the others."""
    signed = torch.tensor([op in SIGNED for op in ops])[choice]
    flips = torch.randint(0, 2, choice.shape, generator=generator).bool()
    return torch.where(signed & flips, -1.0, 1.0).to(dtype)


class Augmentation(Filler, abc.ABC):
    """Base class of the augmentation slot's fillers.

    The pure method is :meth:`augment`; ``meta`` holds the filler's ω (``None``: its own), and every
    random draw comes from ``generator``. Images are ``(B, C, H, W)`` floats in ``[0, 1]`` with dark
    background (Fashion-MNIST; Omniglot as autometa loads it, ink-high): geometric operations fill
    with 0. Labels pass through unchanged unless the filler says otherwise.
    """

    slot: ClassVar[str] = "augmentation"

    @abc.abstractmethod
    def augment(self, x: Tensor, y: Tensor, meta: dict[str, Tensor] | None = None,
                generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """The augmented batch ``(x', y')``."""


class NoAugmentation(Augmentation):
    """The images unchanged."""

    def augment(self, x, y, meta=None, generator=None):
        check_images("NoAugmentation", x)
        return x, y


class RandomCrop(Augmentation):
    """Pad by ``padding`` pixels of zeros and crop back to the original size at a random offset; mirror
    left-right with probability 1/2 if ``flip``.

    ``flip`` is false by default and must stay false for digits and characters (a mirrored 2 or a
    mirrored letter is not the same class); it suits natural images (CIFAR) and clothes.

    References: Krizhevsky et al. 2012; He et al. 2016 (pad 4 and crop for CIFAR).
    """

    SPACE: ClassVar[dict] = {"padding": {"int": [0, 6]}}

    def __init__(self, padding: int = 2, flip: bool = False):
        super().__init__()
        if not isinstance(padding, int) or isinstance(padding, bool) or padding < 0:
            raise ConfigError(f"The `padding` of RandomCrop must be an integer >= 0. Got {padding!r}.")
        if not isinstance(flip, bool):
            raise ConfigError(f"The `flip` of RandomCrop must be true or false. Got {flip!r}.")
        self.padding, self.flip = padding, flip

    def augment(self, x, y, meta=None, generator=None):
        check_images("RandomCrop", x)
        b, _, h, w = x.shape
        p = self.padding
        padded = F.pad(x, (p, p, p, p))
        dy = torch.randint(0, 2 * p + 1, (b,), generator=generator).to(x.device)
        dx = torch.randint(0, 2 * p + 1, (b,), generator=generator).to(x.device)
        rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
        cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
        out = padded[torch.arange(b, device=x.device)[:, None, None, None],
                     torch.arange(x.shape[1], device=x.device)[None, :, None, None], rows, cols]
        if self.flip:
            mirror = torch.rand(b, generator=generator).to(x.device) < 0.5
            out = torch.where(mirror.view(-1, 1, 1, 1), out.flip(-1), out)
        return out, y


class Cutout(Augmentation):
    """Fill one square of side ``size`` pixels, centred at a uniformly drawn pixel and clipped at the
    border, with ``fill`` (0: the background of these images).

    References: DeVries & Taylor 2017, "Improved Regularization of Convolutional Neural Networks with Cutout".
    """

    SPACE: ClassVar[dict] = {"size": {"int": [2, 16]}}

    def __init__(self, size: int = 8, fill: float = 0.0):
        super().__init__()
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ConfigError(f"The `size` of Cutout must be an integer >= 0 (pixels). Got {size!r}.")
        if not isinstance(fill, (int, float)) or isinstance(fill, bool):
            raise ConfigError(f"The `fill` of Cutout must be a number. Got {fill!r}.")
        self.size, self.fill = size, float(fill)

    def augment(self, x, y, meta=None, generator=None):
        check_images("Cutout", x)
        b, _, h, w = x.shape
        cy = torch.randint(0, h, (b,), generator=generator).to(x.device)
        cx = torch.randint(0, w, (b,), generator=generator).to(x.device)
        side = torch.full((b,), float(self.size), dtype=x.dtype, device=x.device)
        return square_fill(x, cy, cx, side, self.fill), y


class RandAugment(Augmentation):
    """``n`` operations drawn uniformly (with replacement) per image, all at one global magnitude
    ``m`` on RandAugment's scale 0..30 (30 = the ranges of :data:`~autometa.slots.augmentation.RANGES`),
    with a random sign for signed operations. ``n`` and ``m`` are the searchable space.

    References: Cubuk, Zoph, Shlens & Le 2020, "RandAugment: Practical automated data augmentation
    with a reduced search space".
    """

    SPACE: ClassVar[dict] = {"n": {"int": [1, 3]}, "m": {"int": [0, 30]}}

    def __init__(self, n: int = 2, m: int = 9, ops: tuple[str, ...] | list[str] = RANDAUGMENT_OPS):
        super().__init__()
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise ConfigError(f"The `n` of RandAugment must be an integer >= 0 (operations per image). Got {n!r}.")
        if not isinstance(m, (int, float)) or isinstance(m, bool) or not 0 <= m <= 30:
            raise ConfigError(f"The `m` of RandAugment must be a number in [0, 30]. Got {m!r}.")
        self.n, self.m, self.ops = n, m, check_ops("RandAugment", ops)

    def augment(self, x, y, meta=None, generator=None):
        check_images("RandAugment", x)
        b = x.shape[0]
        for _ in range(self.n):
            choice = torch.randint(0, len(self.ops), (b,), generator=generator)
            magnitude = self.m / 30.0 * random_signs(self.ops, choice, generator, x.dtype).to(x.device)
            x = apply_per_image(x, self.ops, choice.to(x.device), magnitude, generator)
        return x, y


class TrivialAugment(Augmentation):
    """One operation drawn uniformly per image, at a magnitude drawn uniformly from ``bins`` levels in
    [0, 1] (random sign for signed operations). Uses RandAugment's operations and ranges (the "RA"
    space of the paper, not its wider "TA (wide)" ranges).

    References: Müller & Hutter 2021, "TrivialAugment: Tuning-free Yet State-of-the-Art Data Augmentation".
    """

    def __init__(self, bins: int = 31, ops: tuple[str, ...] | list[str] = RANDAUGMENT_OPS):
        super().__init__()
        if not isinstance(bins, int) or isinstance(bins, bool) or bins < 2:
            raise ConfigError(f"The `bins` of TrivialAugment must be an integer >= 2. Got {bins!r}.")
        self.bins, self.ops = bins, check_ops("TrivialAugment", ops)

    def augment(self, x, y, meta=None, generator=None):
        check_images("TrivialAugment", x)
        b = x.shape[0]
        choice = torch.randint(0, len(self.ops), (b,), generator=generator)
        level = torch.randint(0, self.bins, (b,), generator=generator).to(x.dtype) / (self.bins - 1)
        magnitude = (level * random_signs(self.ops, choice, generator, x.dtype)).to(x.device)
        return apply_per_image(x, self.ops, choice.to(x.device), magnitude, generator), y


_AA = {"ShearX": "shear_x", "ShearY": "shear_y", "TranslateX": "translate_x", "TranslateY": "translate_y",
       "Rotate": "rotate", "AutoContrast": "auto_contrast", "Invert": "invert", "Equalize": "equalize",
       "Solarize": "solarize", "Posterize": "posterize", "Contrast": "contrast", "Color": "color",
       "Brightness": "brightness", "Sharpness": "sharpness"}


def _table(text: str) -> tuple:
    """Parse ``Op p level, Op p level; ...`` into ((op, probability, level/9), (op, probability, level/9))."""
    out = []
    for pair in text.split(";"):
        entries = []
        for entry in pair.split(","):
            name, p, level = entry.split()
            entries.append((_AA[name], float(p), 0.0 if level == "-" else int(level) / 9))
        out.append(tuple(entries))
    return tuple(out)


#: the 25 sub-policies AutoAugment found on reduced SVHN and on reduced CIFAR-10 (Cubuk et al. 2019,
#: appendix; as in torchvision): (operation, probability, magnitude level 0..9 as a fraction of 9)
AUTOAUGMENT_POLICIES = {
    "svhn": _table(
        "ShearX 0.9 4, Invert 0.2 -; ShearY 0.9 8, Invert 0.7 -; Equalize 0.6 -, Solarize 0.6 6;"
        "Invert 0.9 -, Equalize 0.6 -; Equalize 0.6 -, Rotate 0.9 3; ShearX 0.9 4, AutoContrast 0.8 -;"
        "ShearY 0.9 8, Invert 0.4 -; ShearY 0.9 5, Solarize 0.2 6; Invert 0.9 -, AutoContrast 0.8 -;"
        "Equalize 0.6 -, Rotate 0.9 3; ShearX 0.9 4, Solarize 0.3 3; ShearY 0.8 8, Invert 0.7 -;"
        "Equalize 0.9 -, TranslateY 0.6 6; Invert 0.9 -, Equalize 0.6 -; Contrast 0.3 3, Rotate 0.8 4;"
        "Invert 0.8 -, TranslateY 0.0 2; ShearY 0.7 6, Solarize 0.4 8; Invert 0.6 -, Rotate 0.8 4;"
        "ShearY 0.3 7, TranslateX 0.9 3; ShearX 0.1 6, Invert 0.6 -; Solarize 0.7 2, TranslateY 0.6 7;"
        "ShearY 0.8 4, Invert 0.8 -; ShearX 0.7 9, TranslateY 0.8 3; ShearY 0.8 5, AutoContrast 0.7 -;"
        "ShearX 0.7 2, Invert 0.1 -"),
    "cifar10": _table(
        "Invert 0.1 -, Contrast 0.2 6; Rotate 0.7 2, TranslateX 0.3 9; Sharpness 0.8 1, Sharpness 0.9 3;"
        "ShearY 0.5 8, TranslateY 0.7 9; AutoContrast 0.5 -, Equalize 0.9 -; ShearY 0.2 7, Posterize 0.3 7;"
        "Color 0.4 3, Brightness 0.6 7; Sharpness 0.3 9, Brightness 0.7 9; Equalize 0.6 -, Equalize 0.5 -;"
        "Contrast 0.6 7, Sharpness 0.6 5; Color 0.7 7, TranslateX 0.5 8; Equalize 0.3 -, AutoContrast 0.4 -;"
        "TranslateY 0.4 3, Sharpness 0.2 6; Brightness 0.9 6, Color 0.2 8; Solarize 0.5 2, Invert 0.0 -;"
        "Equalize 0.2 -, AutoContrast 0.6 -; Equalize 0.2 -, Equalize 0.6 -; Color 0.9 9, Equalize 0.6 -;"
        "AutoContrast 0.8 -, Solarize 0.2 8; Brightness 0.1 3, Color 0.7 0; Solarize 0.4 5, AutoContrast 0.9 -;"
        "TranslateY 0.9 9, TranslateY 0.7 9; AutoContrast 0.9 -, Solarize 0.8 3; Equalize 0.8 -, Invert 0.1 -;"
        "TranslateY 0.7 9, AutoContrast 0.9 -"),
}


class AutoAugment(Augmentation):
    """A policy found by AutoAugment, transplanted: per image one of its 25 sub-policies drawn uniformly,
    each of its two operations applied with its probability at its magnitude (random sign for signed
    operations). ``policy``: ``"svhn"`` (found on digits; the closer match to grey single-object images)
    or ``"cifar10"``.

    References: Cubuk, Zoph, Mané, Vasudevan & Le 2019, "AutoAugment: Learning Augmentation Strategies from Data".
    """

    def __init__(self, policy: str = "svhn"):
        super().__init__()
        if policy not in AUTOAUGMENT_POLICIES:
            raise ConfigError(f"The `policy` of AutoAugment must be one of {sorted(AUTOAUGMENT_POLICIES)}. "
                              f"Got {policy!r}.")
        self.policy = policy

    def augment(self, x, y, meta=None, generator=None):
        check_images("AutoAugment", x)
        table = AUTOAUGMENT_POLICIES[self.policy]
        names = tuple(sorted({op for pair in table for op, _, _ in pair}))
        b = x.shape[0]
        chosen = torch.randint(0, len(table), (b,), generator=generator)
        for stage in range(2):
            op_index = torch.tensor([names.index(table[k][stage][0]) for k in chosen.tolist()], dtype=torch.long)
            probability = torch.tensor([table[k][stage][1] for k in chosen.tolist()], dtype=x.dtype)
            level = torch.tensor([table[k][stage][2] for k in chosen.tolist()], dtype=x.dtype)
            applied = torch.rand(b, generator=generator, dtype=x.dtype) < probability
            magnitude = level * random_signs(names, op_index, generator, x.dtype)
            op_index = torch.where(applied, op_index, torch.full_like(op_index, -1))
            x = apply_per_image(x, names, op_index.to(x.device), magnitude.to(x.device), generator)
        return x, y

