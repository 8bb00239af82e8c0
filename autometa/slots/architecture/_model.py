"""The DARTS supernet (mixed edges weighted by α) and the discrete network of a genotype.

Both stack ``layers`` cells on a 3x3-convolution stem; the cells at 1/3 and 2/3 of the depth
are reduction cells (stride 2, channels doubled). Every cell reads the outputs of the two
previous cells. Inputs may have any number of channels (1 for Fashion-MNIST, MNIST, Omniglot; 3
for CIFAR-like images) and any size that survives two halvings (28x28 -> 14 -> 7).

The supernet's weights are its module parameters; α is *not* a parameter of the supernet: it is
passed to ``forward`` (``{"normal": (14, ops), "reduce": (14, ops)}`` logits), so that the same
module serves ``functional_call`` with explicit weights and α, as the hypergradient estimators need.

References: Liu, Simonyan & Yang, "DARTS", ICLR 2019 (``model_search.py``, ``model.py``); Liang et
al. 2019, "DARTS+" (early stopping); Chu et al. 2021, "DARTS-: Robustly Stepping out of
Performance Collapse Without Indicators" (the auxiliary skip connection).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from autometa.errors import ConfigError
from autometa.slots.architecture._genotype import Genotype, num_edges
from autometa.slots.architecture._ops import OPS, BatchNorm, FactorizedReduce, ReLUConvBN


def reduction_layers(layers: int) -> set[int]:
    """The indices of the reduction cells: at 1/3 and 2/3 of the depth (as the reference code)."""
    return {layers // 3, 2 * layers // 3}


def _check_shape(in_shape, owner: str) -> tuple[int, int, int]:
    if len(in_shape) != 3 or any(int(s) < 1 for s in in_shape):
        raise ConfigError(f"{owner} needs image inputs of shape (channels, height, width). Got {tuple(in_shape)}.")
    return tuple(int(s) for s in in_shape)


class MixedOp(nn.Module):
    """One edge of the supernet: ``sum_o softmax(α)_o * o(x)`` over the candidate operations.

    Pooling is followed by a batch norm without affine parameters, as in the reference code, so
    that its scale is comparable with the convolutions'.
    """

    def __init__(self, channels: int, stride: int, primitives: tuple[str, ...]):
        super().__init__()
        self.primitives = primitives
        ops = []
        for name in primitives:
            op = OPS[name](channels, stride, False)
            if "pool" in name:
                op = nn.Sequential(op, BatchNorm(channels, affine=False))
            ops.append(op)
        self.ops = nn.ModuleList(ops)
        self.stride = stride

    def forward(self, x: Tensor, weights: Tensor) -> Tensor:
        return sum(w * op(x) for w, op in zip(weights, self.ops))


class SearchCell(nn.Module):
    """A cell of the supernet: 2 inputs, ``steps`` intermediate nodes, a mixed edge from every earlier node."""

    def __init__(self, steps: int, multiplier: int, c_prev_prev: int, c_prev: int, channels: int,
                 reduction: bool, reduction_prev: bool, primitives: tuple[str, ...]):
        super().__init__()
        self.reduction, self.steps, self.multiplier = reduction, steps, multiplier
        self.preprocess0 = (FactorizedReduce(c_prev_prev, channels, affine=False) if reduction_prev
                            else ReLUConvBN(c_prev_prev, channels, 1, 1, 0, affine=False))
        self.preprocess1 = ReLUConvBN(c_prev, channels, 1, 1, 0, affine=False)
        self.edges = nn.ModuleList(MixedOp(channels, 2 if reduction and j < 2 else 1, primitives)
                                   for i in range(steps) for j in range(2 + i))

    def forward(self, s0: Tensor, s1: Tensor, weights: Tensor, aux_skip: float = 0.0) -> Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        offset = 0
        for _ in range(self.steps):
            total = 0
            for j, h in enumerate(states):
                edge = self.edges[offset + j]
                total = total + edge(h, weights[offset + j])
                if aux_skip and edge.stride == 1:
                    # DARTS-: a skip connection outside the competition, decayed to 0 during the search
                    total = total + aux_skip * h
            offset += len(states)
            states.append(total)
        return torch.cat(states[-self.multiplier:], dim=1)


class _Stacked(nn.Module):
    """Stem, cells and classifier shared by the supernet and the discrete network."""

    def _stem(self, in_channels: int, channels: int, stem_multiplier: int) -> int:
        stem = stem_multiplier * channels
        self.stem = nn.Sequential(nn.Conv2d(in_channels, stem, 3, padding=1, bias=False), BatchNorm(stem, affine=True))
        return stem

    def _build(self, in_channels: int, init_channels: int, layers: int, stem_multiplier: int, num_classes,
               make_cell) -> None:
        """Stem, ``layers`` cells (reductions at 1/3 and 2/3 of the depth, channels doubled there) and head.

        ``make_cell(c_prev_prev, c_prev, channels, reduction, reduction_prev)`` returns ``(cell, outputs)``
        with ``outputs`` the number of node outputs the cell concatenates.
        """
        c_prev_prev = c_prev = self._stem(in_channels, init_channels, stem_multiplier)
        channels, reduction_prev = init_channels, False
        cells = []
        for i in range(layers):
            reduction = i in reduction_layers(layers)
            channels = channels * 2 if reduction else channels
            cell, outputs = make_cell(c_prev_prev, c_prev, channels, reduction, reduction_prev)
            cells.append(cell)
            reduction_prev = reduction
            c_prev_prev, c_prev = c_prev, outputs * channels
        self.cells = nn.ModuleList(cells)
        self._head(c_prev, num_classes)

    def _head(self, c_prev: int, num_classes: int | None) -> None:
        # named `head` like Conv4's, so that ANIL (which adapts `head.*`) and Pretrained find it;
        # no classes: an embedding network (metric learners), whose output is the pooled features
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = c_prev
        self.head = nn.Linear(c_prev, num_classes) if num_classes else nn.Identity()

    def _classify(self, s1: Tensor) -> Tensor:
        return self.head(self.global_pooling(s1).flatten(1))


class SearchNetwork(_Stacked):
    """The DARTS supernet for images of ``in_shape`` and ``num_classes`` classes.

    Args:
        in_shape: ``(channels, height, width)`` of one input.
        num_classes: outputs of the classifier.
        primitives: the candidate operations of every edge.
        init_channels: channels of the first cells (16 in the paper's search).
        layers: cells (8 in the paper's search).
        steps: intermediate nodes per cell (4); multiplier: nodes concatenated into the output (4).
        stem_multiplier: the stem has ``stem_multiplier * init_channels`` channels (3).

    ``forward(x, alphas, aux_skip=0.0)``: ``alphas`` maps ``normal`` and ``reduce`` to
    ``(num_edges(steps), len(primitives))`` logits, shared by every cell of a kind.
    """

    def __init__(self, in_shape, num_classes: int, primitives: tuple[str, ...], init_channels: int = 16,
                 layers: int = 8, steps: int = 4, multiplier: int = 4, stem_multiplier: int = 3):
        super().__init__()
        in_channels, _, _ = _check_shape(in_shape, "The DARTS supernet")
        self.primitives, self.steps = tuple(primitives), steps
        self._build(in_channels, init_channels, layers, stem_multiplier, num_classes,
                    lambda pp, p, c, red, red_prev: (SearchCell(steps, multiplier, pp, p, c, red, red_prev,
                                                                self.primitives), multiplier))

    def alpha_shape(self) -> tuple[int, int]:
        return num_edges(self.steps), len(self.primitives)

    def forward(self, x: Tensor, alphas: dict[str, Tensor], aux_skip: float = 0.0) -> Tensor:
        weights = {kind: torch.softmax(alphas[kind], dim=-1) for kind in ("normal", "reduce")}
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            w = weights["reduce" if cell.reduction else "normal"]
            s0, s1 = s1, cell(s0, s1, w, aux_skip if not cell.reduction else 0.0)
        return self._classify(s1)


class Cell(nn.Module):
    """A discrete cell: the two operations per node that a genotype names."""

    def __init__(self, genotype: Genotype, c_prev_prev: int, c_prev: int, channels: int, reduction: bool,
                 reduction_prev: bool):
        super().__init__()
        self.reduction = reduction
        self.preprocess0 = (FactorizedReduce(c_prev_prev, channels) if reduction_prev
                            else ReLUConvBN(c_prev_prev, channels, 1, 1, 0))
        self.preprocess1 = ReLUConvBN(c_prev, channels, 1, 1, 0)
        edges = genotype.reduce if reduction else genotype.normal
        self.concat = tuple(genotype.reduce_concat if reduction else genotype.normal_concat)
        self.inputs = tuple(source for _, source in edges)
        self.ops = nn.ModuleList(OPS[op](channels, 2 if reduction and source < 2 else 1, True)
                                 for op, source in edges)
        self.steps = len(edges) // 2

    def forward(self, s0: Tensor, s1: Tensor) -> Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for node in range(self.steps):
            a, b = 2 * node, 2 * node + 1
            states.append(self.ops[a](states[self.inputs[a]]) + self.ops[b](states[self.inputs[b]]))
        return torch.cat([states[i] for i in self.concat], dim=1)


class Network(_Stacked):
    """The discrete network of a genotype, trained from scratch after the search.

    Args:
        genotype: the cells.
        in_shape, num_classes: as :class:`SearchNetwork`.
        init_channels, layers: the retraining network's width and depth (the paper retrains on
            CIFAR-10 with 36 and 20; the smaller search sizes fit a CPU).

    The paper's auxiliary head and drop-path are not used: the retraining protocol is the same
    for every filler of the slot (see :func:`autometa.slots.architecture.train_network`).
    """

    def __init__(self, genotype: Genotype, in_shape, num_classes: int, init_channels: int = 16, layers: int = 8,
                 stem_multiplier: int = 3):
        super().__init__()
        in_channels, _, _ = _check_shape(in_shape, "A cell network")
        def make_cell(pp, p, c, red, red_prev):
            cell = Cell(genotype, pp, p, c, red, red_prev)
            return cell, len(cell.concat)

        self._build(in_channels, init_channels, layers, stem_multiplier, num_classes, make_cell)

    def features(self, x: Tensor) -> Tensor:
        """The pooled output of the last cell (what the head classifies)."""
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1)
        return self.global_pooling(s1).flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))
