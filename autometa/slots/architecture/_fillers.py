"""Fillers of the architecture slot: the network a learner trains, searched or hand-crafted.

Every filler builds networks for images of a given shape and answers one pure method:

- ``build_network(in_shape, num_classes, seed=0) -> nn.Module``: the network whose weights are
  trained *with* the filler (DARTS: the supernet; the others: their discrete network);
- ``logits(network, params, x, meta=None) -> Tensor``: that network's outputs with the weights
  ``params`` and the filler's meta-parameters ``meta`` (DARTS: α) passed explicitly;
- ``derived_network(in_shape, num_classes, seed=0) -> nn.Module``: the discrete network that is
  retrained from scratch after the search, with the protocol every filler shares
  (:func:`~autometa.slots.architecture.train_network`).

Networks are initialised under ``seed`` without touching the global random state.

=================  ========================================================================
``darts``          :class:`DARTS`: α learned by the bilevel search (first or second order)
``random``         :class:`RandomCell`: a random genotype of the same space, seeded
``genotype``       :class:`GenotypeCell`: a given genotype (a YAML file or a mapping)
``sep_conv_cell``  :class:`SepConvCell`: every node = two separable 3x3 convolutions
``resnet_cell``    :class:`ResNetCell`: every node = separable conv + identity of the previous node
``conv4``          :class:`Conv4Architecture`: the Conv4 network of MAML and ProtoNet
=================  ========================================================================
"""

from __future__ import annotations

import abc
import contextlib
import os
from typing import ClassVar

import torch
from torch import Tensor, nn
from torch.func import functional_call

from autometa.errors import ConfigError
from autometa.nets import Conv4
from autometa.slots._base import Filler
from autometa.slots.architecture._genotype import Genotype, derive_genotype, load_genotype, num_edges
from autometa.slots.architecture._model import Network, SearchNetwork
from autometa.slots.architecture._ops import OPS, SPACES


@contextlib.contextmanager
def seeded(seed: int):
    """Run a block under ``torch.manual_seed(seed)`` and restore the global CPU random state after it.

    Module constructors draw their initial weights from the global generator; this keeps library
    code from changing the caller's random stream while making the weights a function of ``seed``.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _int(owner: str, name: str, value, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ConfigError(f"The `{name}` of {owner} must be an integer >= {low}. Got {value!r} instead.")


def _positive(owner: str, name: str, value, allow_zero: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        raise ConfigError(f"The `{name}` of {owner} must be a number {'>=' if allow_zero else '>'} 0. "
                          f"Got {value!r} instead.")


def resolve_primitives(owner: str, primitives) -> tuple[str, ...]:
    """``"darts"`` (8 operations), ``"reduced"`` (5) or an explicit list of operation names."""
    if isinstance(primitives, str):
        if primitives not in SPACES:
            raise ConfigError(f"The `primitives` of {owner} must be one of {sorted(SPACES)} or a list of "
                              f"operations. Got {primitives!r}.")
        return SPACES[primitives]
    ops = tuple(primitives) if isinstance(primitives, (list, tuple)) else ()
    bad = [op for op in ops if op not in OPS]
    if not ops or bad or len(set(ops)) != len(ops) or all(op == "none" for op in ops):
        raise ConfigError(f"The `primitives` of {owner} must be distinct operations among {sorted(OPS)}, at least "
                          f"one other than 'none'. Got {primitives!r}.")
    return ops


def _image_shape(in_shape) -> tuple[int, int, int]:
    if not isinstance(in_shape, (tuple, list, torch.Size)) or len(in_shape) != 3:
        raise ConfigError(f"An architecture filler builds networks for images (channels, height, width). "
                          f"Got the input shape {in_shape!r}.")
    return tuple(int(s) for s in in_shape)


class ArchitectureFiller(Filler, abc.ABC):
    """Base class of the architecture slot's fillers (see the module docstring for the contract)."""

    slot: ClassVar[str] = "architecture"

    @abc.abstractmethod
    def derived_network(self, in_shape, num_classes: int, seed: int = 0) -> nn.Module:
        """The discrete network retrained from scratch (weights initialised under ``seed``)."""

    def build_network(self, in_shape, num_classes: int, seed: int = 0) -> nn.Module:
        """The network trained with this filler; the discrete network unless the filler searches."""
        return self.derived_network(in_shape, num_classes, seed)

    def logits(self, network: nn.Module, params: dict[str, Tensor], x: Tensor,
               meta: dict[str, Tensor] | None = None) -> Tensor:
        """``network(x)`` with the weights ``params`` (a fixed architecture has no meta-parameters)."""
        return functional_call(network, params, (x,))

    def genotype(self, meta: dict[str, Tensor] | None = None) -> Genotype | None:
        """The cell this filler stands for (``None`` for a network that is not made of cells)."""
        return None


class CellArchitecture(ArchitectureFiller):
    """A fixed genotype stacked into :class:`~autometa.slots.architecture.Network`.

    Args:
        init_channels: channels of the first cells (doubled at each of the two reductions).
        layers: cells.
    """

    def __init__(self, init_channels: int = 16, layers: int = 8):
        super().__init__()
        owner = type(self).__name__
        _int(owner, "init_channels", init_channels, 2)
        if init_channels % 2:
            raise ConfigError(f"The `init_channels` of {owner} must be even (reduction cells split the channels "
                              f"in halves). Got {init_channels}.")
        _int(owner, "layers", layers, 1)
        self.init_channels, self.layers = init_channels, layers

    @abc.abstractmethod
    def genotype(self, meta=None) -> Genotype:
        """The fixed cell."""

    def derived_network(self, in_shape, num_classes, seed=0):
        genotype = self.genotype()
        with seeded(seed):
            return Network(genotype, _image_shape(in_shape), num_classes, self.init_channels, self.layers)


class GenotypeCell(CellArchitecture):
    """A given genotype: the YAML file :func:`save_genotype` wrote, or its mapping.

    Example (a config)::

        model: {architecture: {name: genotype, genotype: results/darts/genotype.yaml}}
    """

    def __init__(self, genotype: str | os.PathLike | dict | Genotype, init_channels: int = 16, layers: int = 8):
        super().__init__(init_channels, layers)
        self._genotype = (genotype if isinstance(genotype, Genotype) else Genotype.from_dict(genotype)
                          if isinstance(genotype, dict) else load_genotype(genotype))
        self.genotype_spec = genotype

    def config(self) -> dict:
        out = super().config()
        out["genotype"] = self._genotype.to_dict()
        return out

    def genotype(self, meta=None):
        return self._genotype


class RandomCell(CellArchitecture):
    """A random genotype from the DARTS space: per node two distinct inputs, each with a uniformly
    drawn operation other than ``none``; a function of ``seed`` (searching ``seed`` is random search).

    References: Li & Talwalkar 2019, "Random Search and Reproducibility for Neural Architecture Search";
    Yu et al. 2020, "Evaluating the Search Phase of Neural Architecture Search".
    """

    SPACE: ClassVar[dict] = {"seed": {"int": [0, 1_000_000]}}

    def __init__(self, seed: int = 0, primitives="darts", steps: int = 4, init_channels: int = 16, layers: int = 8):
        super().__init__(init_channels, layers)
        _int("RandomCell", "seed", seed, 0)
        _int("RandomCell", "steps", steps, 1)
        self._ops = [op for op in resolve_primitives("RandomCell", primitives) if op != "none"]
        self.seed, self.primitives, self.steps = seed, primitives, steps

    def genotype(self, meta=None):
        g = torch.Generator().manual_seed(self.seed)
        cells = {}
        for kind in ("normal", "reduce"):
            gene = []
            for node in range(self.steps):
                for source in torch.randperm(node + 2, generator=g)[:2].tolist():
                    gene.append((self._ops[int(torch.randint(len(self._ops), (), generator=g))], source))
            cells[kind] = tuple(gene)
        concat = tuple(range(2, self.steps + 2))
        return Genotype(cells["normal"], cells["reduce"], concat, concat)


class SepConvCell(CellArchitecture):
    """Hand-crafted: every node applies a separable 3x3 convolution to each of the two latest states."""

    def genotype(self, meta=None):
        gene = tuple(edge for node in range(4) for edge in (("sep_conv_3x3", node), ("sep_conv_3x3", node + 1)))
        return Genotype(gene, gene)


class ResNetCell(CellArchitecture):
    """Hand-crafted, residual: every node is ``sep_conv_3x3(h) + h`` of the previous state (a chain of
    residual blocks inside the cell; the identity is strided by factorized reduction where needed).
    The cell reads only the previous cell's output, so the ``preprocess0`` weights of its cells get
    no gradient (kept so that every cell network has the same layout).

    References: He et al. 2016, "Deep Residual Learning for Image Recognition".
    """

    def genotype(self, meta=None):
        gene = tuple(edge for node in range(4) for edge in (("sep_conv_3x3", node + 1), ("skip_connect", node + 1)))
        return Genotype(gene, gene)


class Conv4Architecture(ArchitectureFiller):
    """Conv4 (four 3x3 conv blocks with batch norm and max-pooling) as a filler of the architecture slot.

    References: Vinyals et al. 2016; Finn et al. 2017; Snell et al. 2017.
    """

    SPACE: ClassVar[dict] = {"hidden": {"int": [16, 128], "log": True}}

    def __init__(self, hidden: int = 64, blocks: int = 4):
        super().__init__()
        _int("Conv4Architecture", "hidden", hidden, 1)
        _int("Conv4Architecture", "blocks", blocks, 1)
        self.hidden, self.blocks = hidden, blocks

    def derived_network(self, in_shape, num_classes, seed=0):
        channels, height, width = _image_shape(in_shape)
        if min(height, width) < 2 ** self.blocks:
            raise ConfigError(f"Conv4Architecture with {self.blocks} max-pooled blocks needs images of at least "
                              f"{2 ** self.blocks}x{2 ** self.blocks}. Got {height}x{width}; use fewer `blocks`.")
        with seeded(seed):
            return Conv4(channels, num_classes, hidden=self.hidden, image_size=min(height, width), blocks=self.blocks)


class DARTS(ArchitectureFiller):
    """Differentiable architecture search: α (one ``(14, ops)`` matrix per cell kind) learned by
    alternating gradient steps on α (validation half) and on the supernet's weights (training half).

    The defaults are the paper's CIFAR-10 search settings (Section 3.1.1, Appendix A.1).

    Args:
        primitives: ``"darts"`` (the 8 operations), ``"reduced"`` (5) or a list of names.
        init_channels, layers: the supernet (16, 8); the derived network is retrained at the same size.
        steps, multiplier: intermediate nodes per cell, and how many are concatenated (4, 4).
        order: ``"first"`` (α-gradient at the current weights) or ``"second"`` (through one virtual
            SGD step with momentum and weight decay).
        hessian: ``"finite_difference"`` (the paper's approximation of the second-order term) or
            ``"exact"`` (double backward through the virtual step, via :class:`autometa.hypergrad.Unrolled`).
        lr, lr_min, momentum, weight_decay, grad_clip: the weights' SGD, cosine-annealed per epoch
            from ``lr`` to ``lr_min``; the virtual step uses the same learning rate (ξ = η).
        arch_lr, arch_betas, arch_weight_decay: Adam on α.
        batch_size, epochs: per half of the training set.
        remedy: ``"none"``; ``"early_stop"`` (DARTS+: stop once the normal cell has ``max_skips``
            skip connections); ``"aux_skip"`` (DARTS-: an auxiliary skip on every stride-1 edge of the
            normal cell, its weight decayed linearly from 1 to 0 over the search).
        max_skips: the early-stop threshold (2).
        hvp_eps: the finite-difference radius, ε = hvp_eps / ||∇w' L_val|| (0.01 in the reference
            code; coarse for small batch-normalised networks, where 1e-4 or ``hessian="exact"`` is safer).
        seed: initialises α (N(0, 1e-3²), as the reference code) and the supernet's weights.

    References: Liu, Simonyan & Yang, "DARTS: Differentiable Architecture Search", ICLR 2019;
    Liang et al. 2019, "DARTS+"; Chu et al. 2021, "DARTS-"; Zela et al. 2020, "Understanding and
    Robustifying Differentiable Architecture Search" (the Hessian eigenvalue).
    """

    SPACE: ClassVar[dict] = {
        "arch_lr": {"float": [1e-4, 1e-2], "log": True},
        "lr": {"float": [1e-3, 0.1], "log": True},
        "order": {"choice": ["first", "second"]},
        "remedy": {"choice": ["none", "early_stop", "aux_skip"]},
    }
    ORDERS: ClassVar[tuple[str, ...]] = ("first", "second")
    HESSIANS: ClassVar[tuple[str, ...]] = ("finite_difference", "exact")
    REMEDIES: ClassVar[tuple[str, ...]] = ("none", "early_stop", "aux_skip")

    def __init__(self, primitives="darts", init_channels: int = 16, layers: int = 8, steps: int = 4,
                 multiplier: int = 4, order: str = "second", hessian: str = "finite_difference",
                 lr: float = 0.025, lr_min: float = 0.001, momentum: float = 0.9, weight_decay: float = 3e-4,
                 grad_clip: float = 5.0, arch_lr: float = 3e-4, arch_betas=(0.5, 0.999),
                 arch_weight_decay: float = 1e-3, batch_size: int = 64, epochs: int = 50, remedy: str = "none",
                 max_skips: int = 2, hvp_eps: float = 0.01, seed: int = 0):
        super().__init__()
        owner = "DARTS"
        self._primitives = resolve_primitives(owner, primitives)
        _int(owner, "init_channels", init_channels, 2)
        if init_channels % 2:
            raise ConfigError(f"The `init_channels` of DARTS must be even (reduction cells split the channels in "
                              f"halves). Got {init_channels}.")
        for name, value, low in (("layers", layers, 1), ("steps", steps, 1), ("batch_size", batch_size, 1),
                                 ("epochs", epochs, 1), ("max_skips", max_skips, 1), ("seed", seed, 0)):
            _int(owner, name, value, low)
        _int(owner, "multiplier", multiplier, 1)
        if multiplier > steps:
            raise ConfigError(f"The `multiplier` of DARTS (nodes concatenated) must be <= `steps`={steps}. "
                              f"Got {multiplier}.")
        for name, value, choices in (("order", order, self.ORDERS), ("hessian", hessian, self.HESSIANS),
                                     ("remedy", remedy, self.REMEDIES)):
            if value not in choices:
                raise ConfigError(f"The `{name}` of DARTS must be one of {list(choices)}. Got {value!r}.")
        for name, value in (("lr", lr), ("lr_min", lr_min), ("arch_lr", arch_lr), ("hvp_eps", hvp_eps)):
            _positive(owner, name, value)
        for name, value in (("momentum", momentum), ("weight_decay", weight_decay), ("grad_clip", grad_clip),
                            ("arch_weight_decay", arch_weight_decay)):
            _positive(owner, name, value, allow_zero=True)
        if not (isinstance(arch_betas, (list, tuple)) and len(arch_betas) == 2
                and all(isinstance(b, (int, float)) and 0 <= b < 1 for b in arch_betas)):
            raise ConfigError(f"The `arch_betas` of DARTS must be two numbers in [0, 1). Got {arch_betas!r}.")
        if not 0 <= momentum < 1:
            raise ConfigError(f"The `momentum` of DARTS must be in [0, 1). Got {momentum!r}.")
        self.primitives, self.init_channels, self.layers, self.steps = primitives, init_channels, layers, steps
        self.multiplier, self.order, self.hessian = multiplier, order, hessian
        self.lr, self.lr_min, self.momentum, self.weight_decay = lr, lr_min, momentum, weight_decay
        self.grad_clip, self.arch_lr, self.arch_betas = grad_clip, arch_lr, tuple(arch_betas)
        self.arch_weight_decay, self.batch_size, self.epochs = arch_weight_decay, batch_size, epochs
        self.remedy, self.max_skips, self.hvp_eps, self.seed = remedy, max_skips, hvp_eps, seed
        g = torch.Generator().manual_seed(seed)
        shape = (num_edges(steps), len(self._primitives))
        self.normal = nn.Parameter(1e-3 * torch.randn(shape, generator=g))
        self.reduce = nn.Parameter(1e-3 * torch.randn(shape, generator=g))

    @property
    def operations(self) -> tuple[str, ...]:
        """The candidate operations, in α's column order."""
        return self._primitives

    def alphas(self, meta: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
        meta = self.resolve(meta)
        return {"normal": meta["normal"], "reduce": meta["reduce"]}

    def build_network(self, in_shape, num_classes, seed=None):
        """The supernet (weights initialised under ``seed``, default the filler's)."""
        with seeded(self.seed if seed is None else seed):
            return SearchNetwork(_image_shape(in_shape), num_classes, self._primitives, self.init_channels,
                                 self.layers, self.steps, self.multiplier)

    def logits(self, network, params, x, meta=None, aux_skip: float = 0.0):
        """The supernet's outputs with weights ``params`` and α from ``meta`` (default: this filler's)."""
        return functional_call(network, params, (x, self.alphas(meta)), {"aux_skip": aux_skip})

    def genotype(self, meta=None):
        """The derived cell: per node the two strongest edges, each with its strongest operation but ``none``."""
        return derive_genotype(self.alphas(meta), self._primitives, self.steps, self.multiplier)

    def derived_network(self, in_shape, num_classes, seed=0):
        with seeded(seed):
            return Network(self.genotype(), _image_shape(in_shape), num_classes, self.init_channels, self.layers)

    def inner_problem(self, network, params, train, val, lr: float | None = None, buffers=None, aux_skip=0.0):
        """The α-gradient's bilevel problem (one virtual step); see :func:`alpha_problem`."""
        from autometa.slots.architecture._search import alpha_problem

        return alpha_problem(self, network, params, train, val, self.lr if lr is None else lr, self.momentum,
                             self.weight_decay, buffers, aux_skip)
