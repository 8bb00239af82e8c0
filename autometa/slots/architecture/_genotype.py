"""Genotypes: a discrete cell, derived from architecture weights, saved as YAML, drawn as a PNG.

A genotype lists, for each kind of cell (``normal``, ``reduce``), two ``(operation, input)``
pairs per intermediate node: input 0 and 1 are the cell's inputs (the outputs of the two
previous cells), input ``k + 2`` is intermediate node ``k``. The cell's output concatenates the
nodes in ``*_concat`` (all four intermediate nodes in DARTS).

References: Liu, Simonyan & Yang, "DARTS: Differentiable Architecture Search", ICLR 2019
(``genotypes.py`` and ``model_search.py: genotype()`` of the reference code).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from torch import Tensor

from autometa.errors import ConfigError
from autometa.slots.architecture._ops import OPS, PARAMETER_FREE

KINDS = ("normal", "reduce")
Edge = tuple[str, int]


def num_edges(steps: int) -> int:
    """Mixed edges of a cell with ``steps`` intermediate nodes (14 for 4)."""
    return sum(2 + i for i in range(steps))


@dataclass(frozen=True)
class Genotype:
    """A discrete architecture: two ``(operation, input)`` edges per intermediate node, per cell kind.

    A derived genotype reads two distinct inputs per node; a hand-written one may read one input
    twice (a residual node ``conv(h) + h``), which the search space itself cannot express.
    """

    normal: tuple[Edge, ...]
    reduce: tuple[Edge, ...]
    normal_concat: tuple[int, ...] = (2, 3, 4, 5)
    reduce_concat: tuple[int, ...] = (2, 3, 4, 5)

    def __post_init__(self):
        problems = []
        for kind in KINDS:
            edges = getattr(self, kind)
            if len(edges) % 2 or not edges:
                problems.append(f"the {kind} cell has {len(edges)} edges; it needs two per intermediate node")
                continue
            for index, edge in enumerate(edges):
                node = index // 2
                if not (isinstance(edge, (tuple, list)) and len(edge) == 2):
                    problems.append(f"{kind} edge {index} is {edge!r}; write [operation, input]")
                    continue
                op, source = edge
                if op not in OPS or op == "none":
                    problems.append(f"{kind} edge {index} has operation {op!r}; use one of "
                                    f"{sorted(set(OPS) - {'none'})}")
                if not isinstance(source, int) or isinstance(source, bool) or not 0 <= source < node + 2:
                    problems.append(f"{kind} edge {index} (node {node}) reads input {source!r}; "
                                    f"it can read 0..{node + 1}")
            concat = getattr(self, f"{kind}_concat")
            steps = len(edges) // 2
            if not concat or any(not isinstance(c, int) or not 2 <= c < steps + 2 for c in concat):
                problems.append(f"{kind}_concat is {list(concat)!r}; use intermediate nodes among 2..{steps + 1}")
        if len(self.normal) != len(self.reduce):
            problems.append(f"the normal cell has {len(self.normal) // 2} nodes and the reduction cell "
                            f"{len(self.reduce) // 2}; give both the same number")
        if problems:
            raise ConfigError("Invalid genotype: " + "; ".join(problems) + ".")

    @property
    def steps(self) -> int:
        return len(self.normal) // 2

    def count(self, kind: str, ops) -> int:
        """How many edges of cell ``kind`` use one of ``ops``."""
        return sum(op in ops for op, _ in getattr(self, kind))

    def parameter_free(self, kind: str = "normal") -> int:
        """Edges of cell ``kind`` without weights (pooling, skip): the symptom of DARTS' collapse."""
        return self.count(kind, PARAMETER_FREE)

    def to_dict(self) -> dict:
        out = {}
        for kind in KINDS:
            out[kind] = [[op, int(source)] for op, source in getattr(self, kind)]
            out[f"{kind}_concat"] = [int(c) for c in getattr(self, f"{kind}_concat")]
        return out

    @classmethod
    def from_dict(cls, data) -> Genotype:
        """A genotype from :meth:`to_dict`'s form (what :func:`save_genotype` writes).

        Raises:
            ConfigError: a missing cell, an unknown operation, ``none``, an input out of range, a
                node without exactly two edges.
        """
        if not isinstance(data, dict) or any(k not in data for k in KINDS):
            raise ConfigError(f"A genotype is a mapping with `normal` and `reduce` lists of [operation, input] "
                              f"pairs (and optional `normal_concat`, `reduce_concat`). Got {data!r}.")
        unknown = set(data) - {*KINDS, "normal_concat", "reduce_concat"}
        if unknown:
            raise ConfigError(f"A genotype has the keys normal, reduce, normal_concat, reduce_concat. Got the unknown "
                              f"keys {sorted(unknown)}.")

        def edges(kind):
            value = data[kind]
            if not isinstance(value, (list, tuple)):
                raise ConfigError(f"The genotype's `{kind}` must be a list of [operation, input] pairs. Got {value!r}.")
            return tuple(tuple(e) if isinstance(e, (list, tuple)) else e for e in value)

        steps = len(data["normal"]) // 2 if isinstance(data["normal"], (list, tuple)) else 4
        default = tuple(range(2, steps + 2))
        return cls(edges("normal"), edges("reduce"), tuple(data.get("normal_concat", default)),
                   tuple(data.get("reduce_concat", default)))


def derive_genotype(weights: dict[str, Tensor], primitives: tuple[str, ...], steps: int = 4,
                    multiplier: int = 4) -> Genotype:
    """The genotype of architecture weights: per node, the two incoming edges whose strongest
    operation other than ``none`` is strongest, each with that operation.

    Args:
        weights: ``{"normal": (edges, ops), "reduce": (edges, ops)}`` architecture weights
            (logits or their softmax: the ranking is the same per edge, and DARTS ranks softmaxes).
        primitives: the operation names, in the columns' order.
        steps: intermediate nodes; multiplier: how many of the last nodes are concatenated.

    References: Liu et al. 2019, Section 2.4 ("retain the top-k strongest operations ... k = 2").
    """
    ops = [i for i, name in enumerate(primitives) if name != "none"]
    if not ops:
        raise ConfigError(f"A search space needs an operation other than 'none'. Got {primitives}.")
    cells = {}
    for kind in KINDS:
        w = torch.softmax(weights[kind].detach().double(), dim=-1)
        if w.shape != (num_edges(steps), len(primitives)):
            raise ConfigError(f"The {kind} architecture weights must have shape "
                              f"({num_edges(steps)}, {len(primitives)}) for {steps} nodes and {len(primitives)} "
                              f"operations. Got {tuple(w.shape)}.")
        gene, start = [], 0
        for node in range(steps):
            block = w[start:start + node + 2][:, ops]
            strength = block.max(dim=1).values
            # stable: equal strengths keep the lower input first
            chosen = sorted(range(node + 2), key=lambda j: -strength[j].item())[:2]
            for j in sorted(chosen, key=lambda j: -strength[j].item()):
                gene.append((primitives[ops[int(block[j].argmax())]], j))
            start += node + 2
        cells[kind] = tuple(gene)
    concat = tuple(range(2 + steps - multiplier, steps + 2))
    return Genotype(cells["normal"], cells["reduce"], concat, concat)


def save_genotype(genotype: Genotype, path: str | os.PathLike) -> Path:
    """Write ``genotype`` as YAML (``normal: [[sep_conv_3x3, 0], ...]``, ...); return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(genotype.to_dict(), default_flow_style=None, sort_keys=False))
    return path


def load_genotype(path: str | os.PathLike) -> Genotype:
    """Read a genotype written by :func:`save_genotype` (or by hand), checked.

    Raises:
        ConfigError: the file is missing or not a valid genotype (the message says why).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"No genotype file at {str(path)!r}; write one with save_genotype or give another path.")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"The genotype file {str(path)!r} is not valid YAML: {exc}.") from exc
    return Genotype.from_dict(data)


def plot_cell(genotype: Genotype, kind: str, path: str | os.PathLike) -> Path:
    """Draw cell ``kind`` of ``genotype`` as a PNG (matplotlib only, no graphviz); return the path.

    Inputs ``c_{k-2}``, ``c_{k-1}`` on the left, intermediate nodes in the middle, the output
    ``c_{k}`` on the right; each edge is labelled with its operation.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # no global pyplot state
    from matplotlib.figure import Figure

    if kind not in KINDS:
        raise ConfigError(f"The cell kind must be one of {KINDS}. Got {kind!r}.")
    edges, concat, steps = getattr(genotype, kind), getattr(genotype, f"{kind}_concat"), genotype.steps
    pos = {0: (0.0, 1.0), 1: (0.0, -1.0)}
    for node in range(steps):
        pos[node + 2] = (1.0 + node, 1.2 - 2.4 * node / max(steps - 1, 1))
    out = (steps + 1.0, 0.0)
    names = {0: "c_{k-2}", 1: "c_{k-1}", **{n + 2: str(n) for n in range(steps)}}
    fig = Figure(figsize=(2.2 * (steps + 2), 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    colors = {"sep": "tab:blue", "dil": "tab:purple", "max": "tab:orange", "avg": "tab:orange", "ski": "tab:green"}
    for index, (op, source) in enumerate(edges):
        target = index // 2 + 2
        (x0, y0), (x1, y1) = pos[source], pos[target]
        ax.annotate("", xy=(x1, y1), xytext=(x0, y0),
                    arrowprops={"arrowstyle": "->", "color": colors.get(op[:3], "k"), "shrinkA": 14, "shrinkB": 14,
                                "connectionstyle": "arc3,rad=0.12"})
        ax.text(0.55 * x0 + 0.45 * x1, 0.55 * y0 + 0.45 * y1, op, fontsize=8, ha="center", va="center",
                color=colors.get(op[:3], "k"), bbox={"boxstyle": "round", "fc": "white", "ec": "none", "alpha": 0.8})
    for node in concat:
        ax.annotate("", xy=out, xytext=pos[node], arrowprops={"arrowstyle": "->", "color": "0.6", "shrinkA": 14,
                                                               "shrinkB": 14})
    for node, (x, y) in pos.items():
        ax.text(x, y, names[node], ha="center", va="center", fontsize=10,
                bbox={"boxstyle": "round", "fc": "lightblue" if node < 2 else "lightyellow", "ec": "k"})
    ax.text(*out, "c_{k}", ha="center", va="center", fontsize=10, bbox={"boxstyle": "round", "fc": "palegreen",
                                                                          "ec": "k"})
    ax.set_xlim(-0.6, steps + 1.6)
    ax.set_ylim(-1.6, 1.6)
    ax.axis("off")
    ax.set_title(f"{kind} cell")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path
