"""The weighting slot: how much each training example counts (``weighting(losses, outputs, targets, meta)``).

Hand-crafted: :class:`UniformWeighting` (``uniform``). Learned: :class:`MetaWeightNet`
(``meta_weight_net``, a loss -> weight network trained through a one-step look-ahead) and
:class:`L2RW` (``l2rw``, per-batch weights from the look-ahead's meta-gradient). Loss-side
alternatives (focal loss, generalised cross-entropy) are fillers of the loss slot; the training
procedure is :class:`autometa.learners.NoisyLabelTrainer`.
"""

from autometa.slots._base import register_filler
from autometa.slots.weighting._handcrafted import UniformWeighting, Weighting
from autometa.slots.weighting._learned import L2RW, MetaWeightNet

for _name, _cls in {"uniform": UniformWeighting, "meta_weight_net": MetaWeightNet, "l2rw": L2RW}.items():
    register_filler(_name, _cls)

__all__ = ["L2RW", "MetaWeightNet", "UniformWeighting", "Weighting"]
