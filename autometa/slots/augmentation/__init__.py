"""The augmentation slot: how training images are transformed (``augment(x, y, meta, generator) -> (x, y)``).

Operations (:mod:`~autometa.slots.augmentation._ops`, pure PyTorch, differentiable where they can be):
shear x/y, translate x/y, rotate, auto-contrast, invert, equalize, solarize, posterize, contrast,
colour, brightness, sharpness, cutout (:data:`OPS`).

Hand-crafted fillers: :class:`NoAugmentation` (``none``), :class:`RandomCrop` (``random_crop``, no
flips unless asked: never for digits or characters), :class:`Cutout` (``cutout``),
:class:`RandAugment` (``rand_augment``, ``n`` and ``m`` searchable), :class:`TrivialAugment`
(``trivial_augment``), :class:`AutoAugment` (``auto_augment``, a transplanted policy) and
:class:`UntrainedDADA` (``dada_untrained``: DADA's space with p = m = 0.5). Learned: :class:`DADA`
(``dada``), searched by :func:`dada_search` (one-step unrolled bilevel objective, RELAX) or learned
through a few-shot learner's meta-objective (``MAML(..., augmentation="dada")``,
``ProtoNet(..., augmentation="dada")``: support-set augmentation).
"""

from autometa.slots._base import register_filler
from autometa.slots.augmentation._dada import (
    DADA,
    ControlVariate,
    UntrainedDADA,
    conditional_gumbel,
    relax_surrogate,
    relax_variance_loss,
)
from autometa.slots.augmentation._ops import (
    DADA_OPS,
    EXACT_MAGNITUDE,
    GREY_OPS,
    NO_MAGNITUDE,
    OPS,
    RANDAUGMENT_OPS,
    RANGES,
    SIGNED,
    straight_through_magnitude,
)
from autometa.slots.augmentation._policies import (
    AUTOAUGMENT_POLICIES,
    Augmentation,
    AutoAugment,
    Cutout,
    NoAugmentation,
    RandAugment,
    RandomCrop,
    TrivialAugment,
)
from autometa.slots.augmentation._search import dada_search, unrolled_problem

for _name, _cls in {"none": NoAugmentation, "random_crop": RandomCrop, "cutout": Cutout,
                    "rand_augment": RandAugment, "trivial_augment": TrivialAugment, "auto_augment": AutoAugment,
                    "dada_untrained": UntrainedDADA, "dada": DADA}.items():
    register_filler(_name, _cls)

__all__ = ["AUTOAUGMENT_POLICIES", "Augmentation", "AutoAugment", "ControlVariate", "Cutout", "DADA", "DADA_OPS",
           "EXACT_MAGNITUDE", "GREY_OPS", "NO_MAGNITUDE", "NoAugmentation", "OPS", "RANDAUGMENT_OPS", "RANGES",
           "RandAugment", "RandomCrop", "SIGNED", "TrivialAugment", "UntrainedDADA", "conditional_gumbel",
           "dada_search", "relax_surrogate", "relax_variance_loss", "straight_through_magnitude", "unrolled_problem"]
