"""The optimizer slot: hand-crafted update rules and learned optimizers, one functional face.

Every filler has ``init(params) -> state`` and ``update(grads, state, params) -> (params, state)``
over dicts of tensors, and a ``space()`` of searchable hyperparameters:

- hand-crafted: :class:`SGD`, :class:`Momentum`, :class:`Nesterov`, :class:`RMSprop`,
  :class:`Adam` (differentiable in their hyperparameters: a tensor ``lr`` can be learned);
- learned: :class:`LSTMOptimizer` (Andrychowicz et al. 2016), meta-trained with
  :func:`meta_train` (truncated BPTT) on problem families (:class:`QuadraticFamily`,
  :class:`MLPFamily`); :class:`MetaLearnerLSTM` (Ravi & Larochelle 2017), a few-shot learner
  registered as ``learner.name: metalearner_lstm``.
"""

from autometa.learners import register_learner
from autometa.optimizers._handcrafted import (
    HANDCRAFTED,
    SGD,
    Adam,
    Momentum,
    Nesterov,
    RMSprop,
    UpdateRule,
    build_rule,
)
from autometa.optimizers._lstm import (
    LSTMOptimizer,
    check_finite_update,
    meta_train,
    optimize,
    preprocess_gradients,
    truncated_unrolls,
    unroll,
)
from autometa.optimizers._metalearner import MetaLearnerLSTM
from autometa.optimizers._problems import MLPFamily, MLPProblem, QuadraticFamily, QuadraticProblem

register_learner("metalearner_lstm", MetaLearnerLSTM)

__all__ = [
    "HANDCRAFTED",
    "SGD",
    "Adam",
    "LSTMOptimizer",
    "MLPFamily",
    "MLPProblem",
    "MetaLearnerLSTM",
    "Momentum",
    "Nesterov",
    "QuadraticFamily",
    "QuadraticProblem",
    "RMSprop",
    "UpdateRule",
    "build_rule",
    "check_finite_update",
    "meta_train",
    "optimize",
    "preprocess_gradients",
    "truncated_unrolls",
    "unroll",
]
