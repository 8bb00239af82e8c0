"""The optimizer slot: hand-crafted update rules and learned optimizers, one functional face.

Every filler has ``init(params, meta=None) -> state`` and ``update(grads, state, params,
meta=None) -> (params, state)`` over dicts of tensors, and a ``space()`` of searchable
hyperparameters:

- hand-crafted: :class:`SGD`, :class:`Momentum`, :class:`Nesterov`, :class:`RMSprop`,
  :class:`Adam` (differentiable in their hyperparameters: a tensor ``lr`` can be learned);
- learned: :class:`LearnedRates` (Meta-SGD's per-coordinate rates), :class:`LSTMOptimizer`
  (Andrychowicz et al. 2016).

Learned fillers are meta-trained through :mod:`autometa.hypergrad`'s estimators, by the learner
that uses them (:class:`autometa.learners.L2O` on optimizee families, or MAML's inner loop).

Config names: ``sgd``, ``momentum``, ``nesterov``, ``rmsprop``, ``adam``, ``learned_rates``, ``lstm``.
"""

from autometa.slots._base import register_filler
from autometa.slots.optimizer._handcrafted import (
    HANDCRAFTED,
    SGD,
    Adam,
    Momentum,
    Nesterov,
    RMSprop,
    UpdateRule,
    build_rule,
)
from autometa.slots.optimizer._learned import LearnedRates
from autometa.slots.optimizer._lstm import LSTMOptimizer, check_finite_update, preprocess_gradients

register_filler("learned_rates", LearnedRates)
register_filler("lstm", LSTMOptimizer)

__all__ = [
    "HANDCRAFTED", "SGD", "Adam", "LSTMOptimizer", "LearnedRates", "Momentum", "Nesterov", "RMSprop",
    "UpdateRule", "build_rule", "check_finite_update", "preprocess_gradients",
]
