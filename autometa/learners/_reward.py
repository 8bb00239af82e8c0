"""Policy gradient with a reward filler: a small grid world, rollouts, and :class:`LIRPGTrainer`.

LIRPG's meta-step is a one-step :class:`~autometa.hypergrad.InnerProblem` solved by
:class:`~autometa.hypergrad.Unrolled`: the policy takes a REINFORCE step on the *mixed* reward
(ω inside it); the outer loss is the importance-weighted REINFORCE loss of the *extrinsic* return
at the updated policy, on the same trajectories (as in Zheng et al.'s implementation), and its
gradient with respect to ω trains the reward network.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from autometa.errors import ConfigError
from autometa.hypergrad import InnerProblem, Unrolled
from autometa.nets import functional_forward
from autometa.slots import build_filler


class GridWorld:
    """An ``size`` x ``size`` grid: start in one corner, one goal in the opposite corner paying
    reward 1 and ending the episode; ``max_steps`` per episode. Observations are one-hot cells;
    actions 0-3 move up, down, left, right (a move into a wall stays put).
    """

    def __init__(self, size: int = 5, max_steps: int = 40):
        for key, value in (("size", size), ("max_steps", max_steps)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 2:
                raise ConfigError(f"The `{key}` of GridWorld must be an integer >= 2. Got {value!r}.")
        self.size, self.max_steps = size, max_steps
        self.observation_dim, self.num_actions = size * size, 4

    def _observe(self, cell: int) -> Tensor:
        return F.one_hot(torch.tensor(cell), self.observation_dim).float()

    def _move(self, cell: int, action: int) -> int:
        row, col = divmod(cell, self.size)
        row += (action == 1) - (action == 0)
        col += (action == 3) - (action == 2)
        return min(max(row, 0), self.size - 1) * self.size + min(max(col, 0), self.size - 1)

    def rollout(self, policy: nn.Module, params: dict[str, Tensor], episodes: int,
                generator: torch.Generator) -> Batch:
        """Sample ``episodes`` episodes with the softmax policy ``functional_forward(policy, params, obs)``."""
        obs, actions, rewards, dones, returns = [], [], [], [], []
        goal = self.observation_dim - 1
        with torch.no_grad():
            for _ in range(episodes):
                cell, total = 0, 0.0
                for t in range(self.max_steps):
                    o = self._observe(cell)
                    logits = functional_forward(policy, params, o[None].to(next(iter(params.values())).dtype))[0]
                    action = int(torch.multinomial(torch.softmax(logits, -1), 1, generator=generator))
                    cell = self._move(cell, action)
                    reward = 1.0 if cell == goal else 0.0
                    done = cell == goal or t == self.max_steps - 1
                    obs.append(o)
                    actions.append(action)
                    rewards.append(reward)
                    dones.append(done)
                    total += reward
                    if done:
                        break
                returns.append(total)
        return Batch(torch.stack(obs), torch.tensor(actions), torch.tensor(rewards), torch.tensor(dones),
                     torch.tensor(returns))


@dataclass
class Batch:
    """Flat trajectories: per-step ``observations``, ``actions``, ``extrinsic`` rewards, ``dones`` (episode
    ends), and the undiscounted extrinsic return of every episode."""

    observations: Tensor
    actions: Tensor
    extrinsic: Tensor
    dones: Tensor
    episode_returns: Tensor

    def __len__(self) -> int:
        return len(self.actions)


def discounted_returns(rewards: Tensor, dones: Tensor, gamma: float | Tensor) -> Tensor:
    """Reward-to-go ``G_t = r_t + gamma * G_{t+1}`` within each episode (differentiable in ``rewards``, and in
    ``gamma`` when it is a tensor)."""
    out, running = [], rewards.new_zeros(())
    for t in range(len(rewards) - 1, -1, -1):
        running = rewards[t] + gamma * running * (0.0 if bool(dones[t]) else 1.0)
        out.append(running)
    return torch.stack(out[::-1])


def log_probs(policy: nn.Module, params: dict[str, Tensor], batch: Batch) -> Tensor:
    """``log pi(a_t | s_t)`` for every step of ``batch``."""
    logits = functional_forward(policy, params, batch.observations.to(next(iter(params.values())).dtype))
    return torch.log_softmax(logits, -1).gather(-1, batch.actions[:, None]).squeeze(-1)


def _advantages(returns: Tensor) -> Tensor:
    return returns - returns.mean()  # a constant baseline: lower variance, same expected gradient


def lirpg_problem(policy: nn.Module, params: dict[str, Tensor], reward, batch: Batch, lr: float,
                  gamma: float) -> InnerProblem:
    """LIRPG's meta-step as a one-step :class:`InnerProblem` over the reward filler's meta-parameters.

    Inner loss: ``-mean(log pi_theta(a|s) * A_mix)`` with the mixed reward ``reward.reward(..., meta)``,
    discounted by ``reward.discount(meta)`` (``gamma`` when the filler sets none); update: one SGD step
    of size ``lr``; outer loss: ``-mean(pi_theta'(a|s) / pi_theta(a|s) * A_ex)`` on the same trajectories,
    with the extrinsic returns discounted by ``gamma``.
    """
    old = log_probs(policy, {k: v.detach() for k, v in params.items()}, batch).detach()
    extrinsic_advantage = _advantages(discounted_returns(batch.extrinsic.to(old.dtype), batch.dones, gamma))

    def inner_loss(p, meta):
        mixed = reward.reward(batch.observations, batch.actions, batch.extrinsic.to(old.dtype), meta)
        discount = reward.discount(meta)
        returns = discounted_returns(mixed, batch.dones, gamma if discount is None else discount.to(old.dtype))
        return -(log_probs(policy, p, batch) * _advantages(returns)).mean()

    def outer_loss(p, meta):
        ratio = torch.exp(log_probs(policy, p, batch) - old)
        value = -(ratio * extrinsic_advantage).mean()
        return value, {"outer_loss": value.detach()}

    return InnerProblem(
        init=lambda meta: {k: v.detach() for k, v in params.items()},
        inner_loss=inner_loss, outer_loss=outer_loss, init_state=lambda p, meta: {},
        update=lambda grads, state, p, meta: ({k: v - lr * grads[k] for k, v in p.items()}, state),
        steps=1,
    )


class LIRPGTrainer:
    """REINFORCE with a reward filler; a learned reward (ω) is trained by LIRPG's meta-gradient.

    Each :meth:`step` takes a batch of trajectories: if the reward has meta-parameters, the
    look-ahead (:func:`lirpg_problem`) gives the meta-gradient of the extrinsic objective and ω takes
    an Adam step; the policy then takes the REINFORCE step on the mixed reward. A count-based
    reward sees the batch's observations afterwards (:meth:`~autometa.slots.reward.Reward.observe`).

    Args:
        policy: the policy network (logits over actions); trained in place.
        reward: a reward filler or its config (``"extrinsic"``, ``{name: reward_net, ...}``).
        lr: the policy's SGD step size (the look-ahead uses the same).
        meta_lr: Adam's step size for ω.
        gamma: the discount (of the policy's returns, unless the reward filler sets its own, as
            :class:`~autometa.slots.reward.MetaDiscount` does; then ``gamma`` discounts only the
            extrinsic objective of the meta-step).

    References: Zheng, Oh & Singh 2018 (LIRPG); Williams 1992 (REINFORCE).
    """

    def __init__(self, policy: nn.Module, reward="extrinsic", lr: float = 0.5, meta_lr: float = 1e-2,
                 gamma: float = 0.99):
        for key, value in (("lr", lr), ("meta_lr", meta_lr)):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"The `{key}` of LIRPGTrainer must be a float > 0. Got {value!r}.")
        if not isinstance(gamma, (int, float)) or isinstance(gamma, bool) or not 0 <= gamma <= 1:
            raise ConfigError(f"The `gamma` of LIRPGTrainer must be a float in [0, 1]. Got {gamma!r}.")
        self.policy, self.lr, self.gamma = policy, float(lr), float(gamma)
        self.reward = build_filler("reward", reward)
        meta = list(self.reward.meta_params().values())
        self.meta_optimizer = torch.optim.Adam(meta, lr=float(meta_lr)) if meta else None

    def params(self) -> dict[str, Tensor]:
        return dict(self.policy.named_parameters())

    def meta_loss(self, batch: Batch, meta: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """The extrinsic objective after the look-ahead step, differentiable with respect to ``meta``."""
        return Unrolled()(lirpg_problem(self.policy, self.params(), self.reward, batch, self.lr, self.gamma), meta)

    def step(self, batch: Batch) -> dict:
        """One meta-step (learned rewards) and one policy step on ``batch``."""
        if self.meta_optimizer is not None:
            meta = self.reward.meta_params()
            loss, _ = self.meta_loss(batch, meta)
            self.meta_optimizer.zero_grad(set_to_none=True)
            grads = torch.autograd.grad(loss, list(meta.values()), allow_unused=True)
            for v, g in zip(meta.values(), grads):
                v.grad = torch.zeros_like(v) if g is None else g
            self.meta_optimizer.step()
        params = self.params()
        with torch.no_grad():
            mixed = self.reward.reward(batch.observations, batch.actions,
                                       batch.extrinsic.to(next(iter(params.values())).dtype))
            discount = self.reward.discount()
            gamma = self.gamma if discount is None else float(discount)
            advantage = _advantages(discounted_returns(mixed, batch.dones, gamma))
        objective = -(log_probs(self.policy, params, batch) * advantage).mean()
        grads = torch.autograd.grad(objective, list(params.values()))
        with torch.no_grad():
            for p, g in zip(params.values(), grads):
                p.sub_(self.lr * g)
        self.reward.observe(batch.observations)
        return {"mean_return": batch.episode_returns.mean().item(), "steps": len(batch), "gamma": gamma}
