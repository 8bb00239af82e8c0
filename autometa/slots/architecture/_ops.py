"""The candidate operations of the DARTS CNN search space, as in the reference code.

Every operation maps ``C`` channels to ``C`` channels; ``stride=2`` halves the spatial size (on the
edges of a reduction cell that leave the cell's inputs). Batch norm normalises with the
statistics of the batch it is given and keeps no running statistics (as every autometa network
does), so a network gives the same result whether it is called statefully or through
``torch.func.functional_call``; during the search it has no affine parameters, as in the paper.

References: Liu, Simonyan & Yang, "DARTS: Differentiable Architecture Search", ICLR 2019
(``operations.py`` of the reference code).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from autometa.errors import ConfigError

#: the paper's eight primitives, in the reference code's order (``none`` first)
PRIMITIVES: tuple[str, ...] = ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3",
                               "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")
#: a reduced five-operation space for fast runs: no-op, identity, pooling, one separable and one dilated conv
REDUCED_PRIMITIVES: tuple[str, ...] = ("none", "max_pool_3x3", "skip_connect", "sep_conv_3x3", "dil_conv_3x3")
#: named spaces a config can ask for
SPACES: dict[str, tuple[str, ...]] = {"darts": PRIMITIVES, "reduced": REDUCED_PRIMITIVES}
#: operations without weights: the ones a collapsed DARTS cell fills up with
PARAMETER_FREE: frozenset[str] = frozenset({"max_pool_3x3", "avg_pool_3x3", "skip_connect"})


class BatchNorm(nn.Module):
    """Batch norm with batch statistics only; ``affine=False`` during the search (as in the paper)."""

    def __init__(self, channels: int, affine: bool = True, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels)) if affine else None
        self.bias = nn.Parameter(torch.zeros(channels)) if affine else None

    def forward(self, x: Tensor) -> Tensor:
        return F.batch_norm(x, None, None, self.weight, self.bias, training=True, eps=self.eps)


class ReLUConvBN(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int, affine: bool = True):
        super().__init__(nn.ReLU(), nn.Conv2d(c_in, c_out, kernel, stride, padding, bias=False),
                         BatchNorm(c_out, affine))


class DilConv(nn.Sequential):
    """ReLU, depthwise (dilated) convolution, pointwise convolution, batch norm."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int, dilation: int,
                 affine: bool = True):
        super().__init__(nn.ReLU(),
                         nn.Conv2d(c_in, c_in, kernel, stride, padding, dilation=dilation, groups=c_in, bias=False),
                         nn.Conv2d(c_in, c_out, 1, bias=False), BatchNorm(c_out, affine))


class SepConv(nn.Sequential):
    """Two stacked depthwise-separable convolutions (the first one strided), as in the reference code."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int, affine: bool = True):
        super().__init__(DilConv(c_in, c_in, kernel, stride, padding, 1, affine),
                         DilConv(c_in, c_out, kernel, 1, padding, 1, affine))


class Identity(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x


class Zero(nn.Module):
    """The ``none`` operation: zeros of the output's shape."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        return x.mul(0.0) if self.stride == 1 else x[:, :, ::self.stride, ::self.stride].mul(0.0)


class FactorizedReduce(nn.Module):
    """Halve the spatial size with two offset strided 1x1 convolutions, concatenated (odd sizes padded)."""

    def __init__(self, c_in: int, c_out: int, affine: bool = True):
        super().__init__()
        if c_out % 2:
            raise ConfigError(f"FactorizedReduce needs an even number of output channels. Got {c_out}; use an "
                              f"even `init_channels`.")
        self.relu = nn.ReLU()
        self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.bn = BatchNorm(c_out, affine)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(x)
        if x.shape[-1] % 2 or x.shape[-2] % 2:  # the reference code assumes even sizes (CIFAR's 32, 16)
            x = F.pad(x, (0, x.shape[-1] % 2, 0, x.shape[-2] % 2))
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(x[:, :, 1:, 1:])], dim=1))


OPS: dict[str, Callable[[int, int, bool], nn.Module]] = {
    "none": lambda c, stride, affine: Zero(stride),
    "avg_pool_3x3": lambda c, stride, affine: nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False),
    "max_pool_3x3": lambda c, stride, affine: nn.MaxPool2d(3, stride=stride, padding=1),
    "skip_connect": lambda c, stride, affine: Identity() if stride == 1 else FactorizedReduce(c, c, affine),
    "sep_conv_3x3": lambda c, stride, affine: SepConv(c, c, 3, stride, 1, affine),
    "sep_conv_5x5": lambda c, stride, affine: SepConv(c, c, 5, stride, 2, affine),
    "dil_conv_3x3": lambda c, stride, affine: DilConv(c, c, 3, stride, 2, 2, affine),
    "dil_conv_5x5": lambda c, stride, affine: DilConv(c, c, 5, stride, 4, 2, affine),
}
