"""The reward slot: the per-step reward a policy-gradient learner maximises
(``reward(observations, actions, extrinsic, meta)``).

Hand-crafted: :class:`ExtrinsicReward` (``extrinsic``), :class:`CountBonus` (``count_bonus``,
SimHash buckets), :class:`BinnedCountBonus` (``binned_count_bonus``, a grid over continuous
observations) and :class:`FrozenRewardNet` (``frozen_reward_net``, a random reward network that
never learns). Learned: :class:`RewardNet` (``reward_net``, LIRPG's intrinsic reward) and
:class:`MetaDiscount` (``meta_discount``, a learned discount). The training procedure is
:class:`autometa.learners.LIRPGTrainer`.
"""

from autometa.slots._base import register_filler
from autometa.slots.reward._fillers import (
    BinnedCountBonus,
    CountBonus,
    ExtrinsicReward,
    FrozenRewardNet,
    MetaDiscount,
    Reward,
    RewardNet,
)

for _name, _cls in {"extrinsic": ExtrinsicReward, "count_bonus": CountBonus, "binned_count_bonus": BinnedCountBonus,
                    "reward_net": RewardNet, "frozen_reward_net": FrozenRewardNet,
                    "meta_discount": MetaDiscount}.items():
    register_filler(_name, _cls)

__all__ = ["BinnedCountBonus", "CountBonus", "ExtrinsicReward", "FrozenRewardNet", "MetaDiscount", "Reward",
           "RewardNet"]
