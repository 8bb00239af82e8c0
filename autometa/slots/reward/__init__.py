"""The reward slot: the per-step reward a policy-gradient learner maximises
(``reward(observations, actions, extrinsic, meta)``).

Hand-crafted: :class:`ExtrinsicReward` (``extrinsic``), :class:`CountBonus` (``count_bonus``) and
:class:`FrozenRewardNet` (``frozen_reward_net``, a random reward network that never learns).
Learned: :class:`RewardNet` (``reward_net``, LIRPG's intrinsic reward). The training procedure is
:class:`autometa.learners.LIRPGTrainer`.
"""

from autometa.slots._base import register_filler
from autometa.slots.reward._fillers import CountBonus, ExtrinsicReward, FrozenRewardNet, Reward, RewardNet

for _name, _cls in {"extrinsic": ExtrinsicReward, "count_bonus": CountBonus, "reward_net": RewardNet,
                    "frozen_reward_net": FrozenRewardNet}.items():
    register_filler(_name, _cls)

__all__ = ["CountBonus", "ExtrinsicReward", "FrozenRewardNet", "Reward", "RewardNet"]
