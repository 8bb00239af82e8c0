"""Learners by name, for configs."""

from __future__ import annotations

from torch import nn

from autometa._params import bind_arguments, did_you_mean
from autometa.errors import ConfigError
from autometa.learners._base import Learner
from autometa.learners._baselines import NearestNeighbor, Pretrained
from autometa.learners._cnaps import SimpleCNAPS
from autometa.learners._gradient import ANIL, FOMAML, MAML, MetaSGD, Reptile, iMAML
from autometa.learners._l2o import L2O
from autometa.learners._memory import MANN, SequenceFeedForward, SequenceLSTM
from autometa.learners._metalearner import MetaLearnerLSTM
from autometa.learners._metanet import MetaNet
from autometa.learners._metric import (
    GraphNet,
    MatchingNet,
    ProtoNet,
    RelationNet,
    SiameseNet,
    ZeroShotProtoNet,
)

LEARNERS: dict[str, type[Learner]] = {
    "maml": MAML, "fomaml": FOMAML, "anil": ANIL, "metasgd": MetaSGD, "reptile": Reptile,
    "imaml": iMAML, "pretrained": Pretrained, "nearest_neighbor": NearestNeighbor,
    "protonet": ProtoNet, "matchingnet": MatchingNet, "relationnet": RelationNet, "siamese": SiameseNet,
    "graphnet": GraphNet, "zeroshot_protonet": ZeroShotProtoNet, "metalearner_lstm": MetaLearnerLSTM,
    "l2o": L2O, "mann": MANN, "sequence_lstm": SequenceLSTM, "sequence_feedforward": SequenceFeedForward,
    "simple_cnaps": SimpleCNAPS, "metanet": MetaNet,
}


def register_learner(name: str, cls: type[Learner]) -> None:
    """Make ``cls`` available to configs as ``learner.name: <name>``."""
    LEARNERS[name.lower()] = cls


def build_learner(spec: dict, model: nn.Module, task: str) -> Learner:
    """A learner from a config's ``learner`` section (``name``, constructor arguments, filler sections).

    Filler sections (``optimizer: {name: adam, lr: 0.1}``, ``loss: focal``) and ``estimator`` are
    passed to the learner, which builds them; every unknown key is reported with a suggestion.
    """
    spec = dict(spec)
    name = str(spec.pop("name", "")).lower()
    if name not in LEARNERS:
        raise ConfigError(f"Unknown learner {name!r}{did_you_mean(name, LEARNERS)}. Choose one of {sorted(LEARNERS)}.")
    cls = LEARNERS[name]
    bind_arguments(f"learner {name!r}", cls, spec, stop=Learner, skip=("model",), extra=("task", "batching"))
    return cls(model, task=task, **spec)


def check_learner_spec(spec: dict) -> None:
    """Check a ``learner`` section without building a network: the name, the arguments, and every filler
    section (``optimizer``, ``loss``, ...) the learner would build.

    Raises:
        ConfigError: the first problem found, with a suggestion.
    """
    from autometa.slots import FILLERS, build_filler

    spec = dict(spec)
    name = str(spec.pop("name", "")).lower()
    if name not in LEARNERS:
        raise ConfigError(f"Unknown learner {name!r}{did_you_mean(name, LEARNERS)}. Choose one of {sorted(LEARNERS)}.")
    bind_arguments(f"learner {name!r}", LEARNERS[name], spec, stop=Learner, skip=("model",), extra=("task", "batching"))
    for slot, value in spec.items():
        if slot in FILLERS and isinstance(value, (str, dict)):
            build_filler(slot, value)
