"""The architecture slot: the network itself, searched (DARTS, random cells) or hand-crafted.

The DARTS CNN search space (cells with 2 inputs, 4 intermediate nodes and 14 mixed edges over
the 8 primitives, or a reduced 5-operation space; normal and reduction cells, α shared per kind),
the bilevel search (first and second order, the Hessian-vector product exact or by finite
differences), genotypes (derived, saved as YAML, drawn as PNG), collapse diagnostics and
remedies, and one retraining protocol for every filler.

Config names: ``darts``, ``random``, ``genotype``, ``sep_conv_cell``, ``resnet_cell``, ``conv4``.

Example::

    from autometa.slots.architecture import DARTS, search, train_network
    darts = DARTS(primitives="reduced", init_channels=8, layers=5, epochs=10, order="first", remedy="early_stop")
    result = search(darts, x, y)                   # α learned in place; result.history has the diagnostics
    scores = train_network(darts, x, y, test_x, test_y, epochs=5)

References: Liu, Simonyan & Yang, "DARTS: Differentiable Architecture Search", ICLR 2019.
"""

from autometa.slots._base import register_filler
from autometa.slots.architecture._fillers import (
    DARTS,
    ArchitectureFiller,
    CellArchitecture,
    Conv4Architecture,
    GenotypeCell,
    RandomCell,
    ResNetCell,
    SepConvCell,
    resolve_primitives,
    seeded,
)
from autometa.slots.architecture._genotype import (
    Genotype,
    derive_genotype,
    load_genotype,
    num_edges,
    plot_cell,
    save_genotype,
)
from autometa.slots.architecture._model import Cell, MixedOp, Network, SearchCell, SearchNetwork, reduction_layers
from autometa.slots.architecture._ops import OPS, PARAMETER_FREE, PRIMITIVES, REDUCED_PRIMITIVES, SPACES
from autometa.slots.architecture._retrain import evaluate_network, train_network
from autometa.slots.architecture._search import (
    MomentumStep,
    SearchResult,
    alpha_gradient,
    alpha_problem,
    finite_difference_hvp,
    hessian_eigenvalue,
    search,
)

for _name, _cls in {"darts": DARTS, "random": RandomCell, "genotype": GenotypeCell, "sep_conv_cell": SepConvCell,
                    "resnet_cell": ResNetCell, "conv4": Conv4Architecture}.items():
    register_filler(_name, _cls)

__all__ = [
    "DARTS", "OPS", "PARAMETER_FREE", "PRIMITIVES", "REDUCED_PRIMITIVES", "SPACES", "ArchitectureFiller", "Cell",
    "CellArchitecture", "Conv4Architecture", "Genotype", "GenotypeCell", "MixedOp", "MomentumStep", "Network",
    "RandomCell", "ResNetCell", "SearchCell", "SearchNetwork", "SearchResult", "SepConvCell", "alpha_gradient",
    "alpha_problem", "derive_genotype", "evaluate_network", "finite_difference_hvp", "hessian_eigenvalue",
    "load_genotype", "num_edges", "plot_cell", "reduction_layers", "resolve_primitives", "save_genotype", "search",
    "seeded", "train_network",
]
