"""The data slot: the training set itself as meta-knowledge (``support(meta) -> (x, y)``).

Coreset fillers select ``ipc`` real images per class (no ω): :class:`RandomReal` (``random_real``),
:class:`Herding` (``herding``), :class:`KCenter` (``k_center``), :class:`Forgetting` (``forgetting``).
Distillation fillers learn ``ipc`` synthetic images per class (ω = the images, and for DD and MTT
learned step sizes): :class:`DD` (``dd``), :class:`DC` (``dc``), :class:`DSA` (``dsa``), :class:`DM`
(``dm``), :class:`MTT` (``mtt``). Every filler is built with ``fit(x, y)`` on a real training set and
judged by one protocol, :func:`evaluate_support` (ConvNet-3 trained from scratch on the set, tested on
real images). :func:`save_support` writes a set that ``autometa.data.load_dataset("set.npz")`` reads;
:func:`save_grid` draws it. The differentiable siamese augmentation lives in :mod:`._augment` (:func:`dsa`).

Example::

    from autometa.slots.data import DM, EvalProtocol, evaluate_support
    filler = DM(ipc=1, iterations=200).fit(x_train, y_train)     # x: (n, 1, 28, 28) normalised
    x_syn, y_syn = filler.support()
    print(evaluate_support(x_syn, y_syn, x_test, y_test, EvalProtocol(epochs=300), seeds=range(5)))
"""

from autometa.slots._base import register_filler
from autometa.slots.data._augment import DEFAULT_STRATEGY, DCAugParams, DSAParams, dc_augment, dsa, strategy_for
from autometa.slots.data._base import DataFiller, per_class_labels
from autometa.slots.data._convnet import ConvNet, build_convnet
from autometa.slots.data._coreset import Forgetting, Herding, KCenter, RandomReal
from autometa.slots.data._distill import (
    DC,
    DC_LOOPS,
    DD,
    DM,
    DSA,
    MTT,
    gradient_match_distance,
    mean_embedding_distances,
    unrolled_real_loss,
)
from autometa.slots.data._evaluate import EvalProtocol, accuracy, evaluate_support, train_on_support
from autometa.slots.data._io import save_grid, save_support

for _name, _cls in {"random_real": RandomReal, "herding": Herding, "k_center": KCenter, "forgetting": Forgetting,
                    "dd": DD, "dc": DC, "dsa": DSA, "dm": DM, "mtt": MTT}.items():
    register_filler(_name, _cls)

__all__ = ["DC", "DC_LOOPS", "DD", "DEFAULT_STRATEGY", "DM", "DSA", "MTT", "ConvNet", "DCAugParams", "DSAParams",
           "DataFiller", "EvalProtocol", "Forgetting", "Herding", "KCenter", "RandomReal", "accuracy", "build_convnet",
           "dc_augment", "dsa", "evaluate_support", "gradient_match_distance", "mean_embedding_distances",
           "per_class_labels", "save_grid", "save_support", "strategy_for",
           "train_on_support", "unrolled_real_loss"]
