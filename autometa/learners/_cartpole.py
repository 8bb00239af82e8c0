"""A delayed-reward CartPole for the reward slot (gymnasium, imported lazily: ``pip install 'autometa[rl]'``).

:class:`DelayedReward` wraps any gymnasium-style environment so that its rewards accumulate and are
paid out every ``delay`` steps and at the end of an episode (LIRPG's delayed MuJoCo setting, here
with CartPole's reward of 1 per step: 20 every 20 steps and the remainder at the end).
:class:`DelayedRewardCartPole` samples episodes of it with a softmax policy, the same interface as
:class:`~autometa.learners.GridWorld`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from autometa.errors import BackendUnavailableError, ConfigError
from autometa.learners._reward import Batch
from autometa.nets import functional_forward


def _gymnasium():
    try:
        import gymnasium
    except ImportError as exc:  # the optional extra
        raise BackendUnavailableError("DelayedRewardCartPole needs gymnasium: pip install 'autometa[rl]' "
                                      "(or pip install gymnasium).") from exc
    return gymnasium


def _integer(owner: str, name: str, value, low: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ConfigError(f"The `{name}` of {owner} must be an integer >= {low}. Got {value!r}.")
    return value


class DelayedReward:
    """Wrap a gymnasium-style environment (``reset(seed=)``, ``step(action)`` with five results) so that
    rewards are summed and paid every ``delay`` steps of an episode and at its end (terminated or
    truncated); every other step pays 0. The episode's total reward is unchanged.

    Args:
        env: the environment.
        delay: steps between payments (1: the original rewards).

    References: Zheng, Oh & Singh 2018 (LIRPG's delayed-reward environments).
    """

    def __init__(self, env, delay: int = 20):
        self.env = env
        self.delay = _integer("DelayedReward", "delay", delay, 1)
        self._pending, self._steps = 0.0, 0

    def reset(self, seed: int | None = None):
        self._pending, self._steps = 0.0, 0
        return self.env.reset(seed=seed)

    def step(self, action):
        observation, reward, terminated, truncated, info = self.env.step(action)
        self._pending += float(reward)
        self._steps += 1
        if terminated or truncated or self._steps % self.delay == 0:
            reward, self._pending = self._pending, 0.0
        else:
            reward = 0.0
        return observation, reward, terminated, truncated, info


class DelayedRewardCartPole:
    """gymnasium's CartPole-v1 (reward 1 per step the pole stays up), truncated at ``max_steps``, with the
    reward delayed by :class:`DelayedReward`. Observations are the 4 raw state variables (cart position,
    cart velocity, pole angle, pole angular velocity); 2 actions (push left, push right).

    Episodes of a batch run in lockstep so that the policy sees all live environments in one forward
    pass; every episode's reset seed is drawn from the rollout's generator, so rollouts are seeded.

    Args:
        delay: steps between reward payments (20 as in the issue; 1 for the usual CartPole).
        max_steps: the time limit of an episode (CartPole-v1's is 500).

    Raises:
        BackendUnavailableError: gymnasium is not installed.
    """

    observation_dim, num_actions = 4, 2

    def __init__(self, delay: int = 20, max_steps: int = 200):
        self.delay = _integer("DelayedRewardCartPole", "delay", delay, 1)
        self.max_steps = _integer("DelayedRewardCartPole", "max_steps", max_steps, 1)
        self._gym = _gymnasium()
        self._envs: list[DelayedReward] = []

    def _make(self) -> DelayedReward:
        return DelayedReward(self._gym.make("CartPole-v1", max_episode_steps=self.max_steps), self.delay)

    def rollout(self, policy: nn.Module, params: dict[str, Tensor], episodes: int,
                generator: torch.Generator) -> Batch:
        """Sample ``episodes`` episodes with the softmax policy ``functional_forward(policy, params, obs)``."""
        while len(self._envs) < episodes:
            self._envs.append(self._make())
        seeds = torch.randint(0, 2 ** 31 - 1, (episodes,), generator=generator).tolist()
        dtype = next(iter(params.values())).dtype
        traces = [{"obs": [], "actions": [], "rewards": []} for _ in range(episodes)]
        current = np.stack([self._envs[i].reset(seed=seeds[i])[0] for i in range(episodes)])
        live = list(range(episodes))
        with torch.no_grad():
            while live:
                observations = torch.as_tensor(current[live], dtype=dtype)
                probs = torch.softmax(functional_forward(policy, params, observations), -1)
                actions = torch.multinomial(probs, 1, generator=generator)[:, 0].tolist()
                still = []
                for i, action in zip(live, actions):
                    trace = traces[i]
                    trace["obs"].append(current[i].copy())
                    trace["actions"].append(action)
                    observation, reward, terminated, truncated, _ = self._envs[i].step(action)
                    trace["rewards"].append(float(reward))
                    current[i] = observation
                    if not (terminated or truncated):
                        still.append(i)
                live = still
        lengths = [len(t["actions"]) for t in traces]
        dones = torch.zeros(sum(lengths), dtype=torch.bool)
        dones[torch.tensor(np.cumsum(lengths) - 1)] = True
        return Batch(torch.as_tensor(np.concatenate([np.stack(t["obs"]) for t in traces]), dtype=torch.float32),
                     torch.tensor([a for t in traces for a in t["actions"]]),
                     torch.tensor([r for t in traces for r in t["rewards"]]), dones,
                     torch.tensor([sum(t["rewards"]) for t in traces]))
