"""Learners by name, for configs."""

from __future__ import annotations

import inspect

from torch import nn

from autometa.errors import ConfigError
from autometa.learners._base import Learner
from autometa.learners._baselines import NearestNeighbor, Pretrained
from autometa.learners._gradient import ANIL, FOMAML, MAML, MetaSGD, Reptile, iMAML
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
    "graphnet": GraphNet, "zeroshot_protonet": ZeroShotProtoNet,
}


def register_learner(name: str, cls: type[Learner]) -> None:
    """Make ``cls`` available to configs as ``learner.name: <name>``."""
    LEARNERS[name.lower()] = cls


def build_learner(spec: dict, model: nn.Module, task: str) -> Learner:
    """A learner from a config's ``learner`` section (``name`` plus constructor arguments)."""
    spec = dict(spec)
    name = str(spec.pop("name", "")).lower()
    if name not in LEARNERS:
        raise ConfigError(f"Unknown learner {name!r}. Choose one of {sorted(LEARNERS)}.")
    cls = LEARNERS[name]
    accepted = set()
    for klass in cls.__mro__:
        if klass is Learner:
            break
        accepted |= set(inspect.signature(klass.__init__).parameters) - {"self", "model", "kwargs"}
    unknown = sorted(set(spec) - accepted - {"task", "batching"})
    if unknown:
        raise ConfigError(f"Learner {name!r} has no argument(s) {unknown}. It accepts {sorted(accepted)}.")
    return cls(model, task=task, **spec)
