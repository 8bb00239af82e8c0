"""Inner solvers: learners that adapt to a task from its support set.

All share :class:`Learner`: ``meta_backward(batch)`` during meta-training and
``evaluate(batch)`` for per-task query metrics.
"""

from autometa.learners._base import Learner, query_metrics, task_loss_fn
from autometa.learners._baselines import NearestNeighbor, Pretrained
from autometa.learners._cartpole import DelayedReward, DelayedRewardCartPole
from autometa.learners._cnaps import SimpleCNAPS, mahalanobis_logits, regularized_class_covariances
from autometa.learners._gradient import ANIL, FOMAML, MAML, MetaSGD, Reptile, iMAML
from autometa.learners._l2o import L2O
from autometa.learners._memory import MANN, SequenceFeedForward, SequenceLearner, SequenceLSTM, lru_memory_step
from autometa.learners._metalearner import MetaLearnerLSTM
from autometa.learners._metanet import MetaNet
from autometa.learners._metric import (
    GraphNet,
    MatchingNet,
    MetricLearner,
    ProtoNet,
    RelationNet,
    SiameseNet,
    ZeroShotProtoNet,
)
from autometa.learners._registry import LEARNERS, build_learner, check_learner_spec, register_learner
from autometa.learners._reward import GridWorld, LIRPGTrainer
from autometa.learners._weighting import NoisyLabelTrainer, clean_holdout, corrupt_labels, noise_transition

__all__ = [
    "Learner", "query_metrics", "task_loss_fn", "ANIL", "FOMAML", "MAML", "MetaSGD", "Reptile", "iMAML",
    "MetaLearnerLSTM", "L2O", "NearestNeighbor", "Pretrained", "LEARNERS", "build_learner", "check_learner_spec",
    "register_learner",
    "MetricLearner",
    "ProtoNet", "MatchingNet",
    "RelationNet", "SiameseNet", "GraphNet", "ZeroShotProtoNet",
    "MetaNet", "SimpleCNAPS", "mahalanobis_logits", "regularized_class_covariances",
    "MANN", "SequenceLearner", "SequenceLSTM", "SequenceFeedForward", "lru_memory_step",
    "NoisyLabelTrainer", "clean_holdout", "corrupt_labels", "noise_transition", "GridWorld", "LIRPGTrainer",
    "DelayedReward", "DelayedRewardCartPole",
]
