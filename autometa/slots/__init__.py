"""Slots and fillers: every replaceable part of learning behind one interface.

A slot is a part of the learning algorithm that people usually hand-craft; a :class:`Filler`
fills it, hand-crafted or learned, with two faces: ``space()`` for search backends and
``meta_params()`` for hypergradient estimators. Learners compose fillers
(``MAML(model, optimizer=Adam(lr=0.1), loss=FocalLoss())``) and expose their meta-parameters as
``"<slot>.<name>"``; configs name them as ``learner.optimizer: {name: adam, lr: 0.1}``.

Slots: ``optimizer`` (:mod:`autometa.slots.optimizer`), ``loss`` (:mod:`autometa.slots.loss`),
``weighting`` (:mod:`autometa.slots.weighting`), ``reward`` (:mod:`autometa.slots.reward`),
``architecture`` (:mod:`autometa.slots.architecture`), ``augmentation``
(:mod:`autometa.slots.augmentation`), ``data`` (:mod:`autometa.slots.data`).
A filler written outside autometa is registered with :func:`register_filler`.
"""

from autometa.slots import architecture, augmentation, data, loss, optimizer, reward, weighting
from autometa.slots._base import FILLERS, SLOTS, Filler, build_filler, register_filler, registered_name

__all__ = ["FILLERS", "SLOTS", "Filler", "architecture", "augmentation", "build_filler", "data", "loss", "optimizer",
           "register_filler",
           "registered_name", "reward", "weighting"]
