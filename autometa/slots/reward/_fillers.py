"""Fillers of the reward slot: the reward a policy-gradient learner maximises, per step.

The pure method is ``reward(observations, actions, extrinsic, meta) -> per-step rewards`` with
``observations`` ``(T, observation_dim)``, ``actions`` ``(T,)`` integers and ``extrinsic`` ``(T,)``
the environment's rewards. Learned rewards add an intrinsic term to the extrinsic one
(``extrinsic + scale * r_in``) so that the policy keeps the task's objective. A filler may also
set the discount of the returns the policy is trained on (``discount(meta)``; None: the trainer's
``gamma``), which :class:`MetaDiscount` learns.
"""

from __future__ import annotations

import abc
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from autometa.errors import ConfigError
from autometa.slots._base import Filler


def _positive_int(owner: str, name: str, value) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"The `{name}` of {owner} must be an integer >= 1. Got {value!r}.")
    return value


def _non_negative(owner: str, name: str, value) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
        raise ConfigError(f"The `{name}` of {owner} must be a float >= 0. Got {value!r}.")
    return float(value)


class Reward(Filler, abc.ABC):
    """Base class of the reward slot's fillers (see the module docstring for :meth:`reward`)."""

    slot: ClassVar[str] = "reward"

    @abc.abstractmethod
    def reward(self, observations: Tensor, actions: Tensor, extrinsic: Tensor,
               meta: dict[str, Tensor] | None = None) -> Tensor:
        """Per-step rewards for a trajectory (see the module docstring)."""

    def observe(self, observations: Tensor) -> None:
        """Record visited observations (count-based fillers); a no-op for the others."""

    def discount(self, meta: dict[str, Tensor] | None = None) -> Tensor | None:
        """The discount of the returns the policy is trained on; None (the default): the trainer's ``gamma``."""
        return None


class ExtrinsicReward(Reward):
    """The environment's reward, unchanged."""

    def reward(self, observations, actions, extrinsic, meta=None):
        return extrinsic.clone()


class _VisitCounts(Reward):
    """``extrinsic + bonus / sqrt(n(s))`` with ``n(s)`` the visit count of the observation's bucket.

    Subclasses say how an observation maps to a bucket (:meth:`buckets`) and register a ``counts``
    buffer with one entry per bucket. Counts grow only through :meth:`observe` (the trainer calls it
    after each rollout), so :meth:`reward` is pure; an unvisited bucket counts as 1.
    """

    @abc.abstractmethod
    def buckets(self, observations: Tensor) -> Tensor:
        """The bucket index of every observation, ``(T,)`` integers."""

    def observe(self, observations):
        self.counts.index_add_(0, self.buckets(observations.detach()),
                               torch.ones(len(observations), dtype=self.counts.dtype))

    def reward(self, observations, actions, extrinsic, meta=None):
        counts = self.counts[self.buckets(observations)].clamp_min(1.0).to(extrinsic.dtype)
        return extrinsic + self.bonus / counts.sqrt()


class CountBonus(_VisitCounts):
    """``extrinsic + bonus / sqrt(n(s))``, with ``n(s)`` the visit count of the observation's SimHash bucket.

    Observations are hashed by the signs of ``bits`` fixed random projections (seeded), so the
    bonus applies to continuous observations too; for one-hot grid cells with enough bits every
    cell gets its own bucket. Counts grow only through :meth:`observe` (the trainer calls it after
    each rollout), so :meth:`reward` is pure.

    Args:
        observation_dim: the length of an observation vector.
        bonus: the scale of the bonus (beta).
        bits: hash bits (2**bits buckets).
        seed: seeds the projection.

    References: Tang et al. 2017, "#Exploration: A Study of Count-Based Exploration for Deep RL".
    """

    SPACE: ClassVar[dict] = {"bonus": {"float": [1e-3, 1.0], "log": True}}

    def __init__(self, observation_dim: int = 4, bonus: float = 0.1, bits: int = 16, seed: int = 0):
        super().__init__()
        self.observation_dim = _positive_int("CountBonus", "observation_dim", observation_dim)
        self.bonus = _non_negative("CountBonus", "bonus", bonus)
        self.bits = _positive_int("CountBonus", "bits", bits)
        if self.bits > 24:
            raise ConfigError(f"The `bits` of CountBonus must be at most 24 (2**bits counters). Got {bits!r}.")
        self.seed = int(seed)
        generator = torch.Generator().manual_seed(self.seed)
        self.register_buffer("projection", torch.randn(self.observation_dim, self.bits, generator=generator))
        self.register_buffer("counts", torch.zeros(2 ** self.bits))

    def buckets(self, observations: Tensor) -> Tensor:
        signs = (observations.to(self.projection.dtype) @ self.projection > 0).long()
        return (signs * (2 ** torch.arange(self.bits))).sum(-1)


class BinnedCountBonus(_VisitCounts):
    """``extrinsic + bonus / sqrt(n(s))`` with ``n(s)`` the visit count of the observation's grid cell.

    The count for continuous observations: each coordinate is clipped to ``[low, high]`` and cut into
    ``bins`` equal bins, and a state's bucket is its tuple of bin indices (``bins ** observation_dim``
    counters). Unlike SimHash's sign projections (:class:`CountBonus`), which only see the direction of
    an observation from the origin, the grid separates states by their magnitude too; for CartPole's
    4 coordinates and 10 bins, 10,000 cells.

    Args:
        observation_dim: the length of an observation vector.
        bonus: the scale of the bonus (beta).
        bins: bins per coordinate.
        low, high: the range of every coordinate (one float for all, or one per coordinate); values
            outside fall into the first or last bin.

    References: Tang et al. 2017 (count-based exploration; their static hashing baseline for
    low-dimensional states); Strehl & Littman 2008 (the 1/sqrt(n) bonus).
    """

    SPACE: ClassVar[dict] = {"bonus": {"float": [1e-3, 1.0], "log": True}, "bins": {"int": [2, 20]}}

    def __init__(self, observation_dim: int = 4, bonus: float = 0.1, bins: int = 10, low=-1.0, high=1.0):
        super().__init__()
        owner = "BinnedCountBonus"
        self.observation_dim = _positive_int(owner, "observation_dim", observation_dim)
        self.bonus = _non_negative(owner, "bonus", bonus)
        self.bins = _positive_int(owner, "bins", bins)
        if self.bins ** self.observation_dim > 2 ** 24:
            raise ConfigError(f"BinnedCountBonus would need bins ** observation_dim = {self.bins}**"
                              f"{self.observation_dim} counters (at most 2**24); use fewer `bins`.")
        self.low, self.high = low, high
        bounds = []
        for name, value in (("low", low), ("high", high)):
            values = [value] * self.observation_dim if isinstance(value, (int, float)) else value
            if not isinstance(values, (list, tuple)) or len(values) != self.observation_dim or not all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
                raise ConfigError(f"The `{name}` of BinnedCountBonus must be a float or a list of "
                                  f"{self.observation_dim} floats (one per coordinate). Got {value!r}.")
            bounds.append(torch.tensor([float(v) for v in values]))
        if not bool((bounds[1] > bounds[0]).all()):
            raise ConfigError(f"BinnedCountBonus needs high > low in every coordinate. Got low={low!r}, high={high!r}.")
        self.register_buffer("lower", bounds[0])
        self.register_buffer("upper", bounds[1])
        self.register_buffer("counts", torch.zeros(self.bins ** self.observation_dim))

    def buckets(self, observations: Tensor) -> Tensor:
        scaled = (observations.to(self.lower.dtype) - self.lower) / (self.upper - self.lower)
        index = (scaled * self.bins).floor().long().clamp(0, self.bins - 1)
        return (index * self.bins ** torch.arange(self.observation_dim)).sum(-1)


class RewardNet(Reward):
    """``extrinsic + scale * tanh(MLP([observation, one-hot action]))``: a learned intrinsic reward.

    ω is the network's weights, learned (by a trainer such as
    :class:`autometa.learners.LIRPGTrainer`) from the meta-gradient of the *extrinsic* return
    through a differentiable policy update on the mixed reward. The network reads its weights
    from ``meta`` through ``functional_call``.

    Args:
        observation_dim, num_actions: the environment's sizes.
        hidden: the hidden width.
        scale: the weight of the intrinsic reward (lambda in LIRPG).
        seed: seeds the initialisation.

    References: Zheng, Oh & Singh 2018, "On Learning Intrinsic Rewards for Policy Gradient Methods".
    """

    SPACE: ClassVar[dict] = {"scale": {"float": [1e-3, 1.0], "log": True}, "hidden": {"int": [8, 128], "log": True}}
    learn: ClassVar[bool] = True

    def __init__(self, observation_dim: int = 4, num_actions: int = 2, hidden: int = 32, scale: float = 0.1,
                 seed: int = 0):
        super().__init__()
        owner = type(self).__name__
        self.observation_dim = _positive_int(owner, "observation_dim", observation_dim)
        self.num_actions = _positive_int(owner, "num_actions", num_actions)
        self.hidden = _positive_int(owner, "hidden", hidden)
        self.scale = _non_negative(owner, "scale", scale)
        self.seed = int(seed)
        self.net = nn.Sequential(nn.Linear(self.observation_dim + self.num_actions, self.hidden), nn.ReLU(),
                                 nn.Linear(self.hidden, 1))
        generator = torch.Generator().manual_seed(self.seed)
        with torch.no_grad():
            for layer in (self.net[0], self.net[2]):
                bound = 1.0 / layer.in_features ** 0.5
                layer.weight.uniform_(-bound, bound, generator=generator)
                layer.bias.uniform_(-bound, bound, generator=generator)
        if not self.learn:
            self.net.requires_grad_(False)

    def intrinsic(self, observations: Tensor, actions: Tensor, meta: dict[str, Tensor] | None = None) -> Tensor:
        """The intrinsic reward ``tanh(MLP(...))`` in (-1, 1), per step."""
        if meta is None or not any(k.startswith("net.") for k in meta):
            params = {k: v for k, v in self.net.named_parameters()}
        else:
            params = {k.removeprefix("net."): v for k, v in meta.items() if k.startswith("net.")}
        dtype = next(iter(params.values())).dtype
        inputs = torch.cat([observations.to(dtype), F.one_hot(actions, self.num_actions).to(dtype)], -1)
        return torch.tanh(functional_call(self.net, params, (inputs,))).squeeze(-1)

    def reward(self, observations, actions, extrinsic, meta=None):
        return extrinsic + self.scale * self.intrinsic(observations, actions, self.resolve(meta))


class FrozenRewardNet(RewardNet):
    """:class:`RewardNet` kept at its random initialisation: the same extra reward, never learned.

    The control for "is it the learning or the extra reward?".
    """

    learn = False


class MetaDiscount(Reward):
    """The extrinsic reward, with a learned discount: ω is one number, ``logit(gamma)``.

    The policy is trained on returns discounted by ``sigmoid(logit)``; the meta-gradient of the
    extrinsic objective (discounted by the trainer's fixed ``gamma``, the outer discount) after one
    differentiable policy step trains it, as in Xu, van Hasselt & Silver's meta-gradient RL.

    Args:
        gamma: the initial discount, in (0, 1).

    References: Xu, van Hasselt & Silver 2018, "Meta-Gradient Reinforcement Learning".
    """

    SPACE: ClassVar[dict] = {"gamma": {"float": [0.5, 0.999]}}

    def __init__(self, gamma: float = 0.9):
        super().__init__()
        if not isinstance(gamma, (int, float)) or isinstance(gamma, bool) or not 0 < gamma < 1:
            raise ConfigError(f"The `gamma` of MetaDiscount must be a float in (0, 1) (the initial discount). "
                              f"Got {gamma!r}.")
        self.gamma = float(gamma)
        self.logit = nn.Parameter(torch.logit(torch.tensor(self.gamma, dtype=torch.float64)).float())

    def reward(self, observations, actions, extrinsic, meta=None):
        return extrinsic.clone()

    def discount(self, meta=None):
        return torch.sigmoid(self.resolve(meta)["logit"])
