"""The reward slot (extrinsic, count bonus, LIRPG's reward network and its frozen control) and the
LIRPG trainer, against hand-written float64 computations."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from autometa.errors import ConfigError
from autometa.learners._reward import Batch, GridWorld, LIRPGTrainer, discounted_returns
from autometa.slots import build_filler
from autometa.slots.reward import (
    BinnedCountBonus,
    CountBonus,
    ExtrinsicReward,
    FrozenRewardNet,
    MetaDiscount,
    RewardNet,
)
from autometa.testing import check_filler
from autometa.testing._fillers import check_meta_gradient


@pytest.mark.parametrize("factory", [ExtrinsicReward, lambda: CountBonus(observation_dim=4),
                                     lambda: BinnedCountBonus(observation_dim=4, bins=5),
                                     lambda: RewardNet(observation_dim=4, num_actions=2, hidden=8),
                                     lambda: FrozenRewardNet(observation_dim=4, num_actions=2, hidden=8),
                                     lambda: MetaDiscount(gamma=0.8)],
                         ids=["extrinsic", "count_bonus", "binned_count_bonus", "reward_net", "frozen_reward_net",
                              "meta_discount"])
def test_reward_fillers_conform(factory):
    check_filler(factory)


class _OwnWeightsRewardNet(RewardNet):
    """Planted bug: ignores ``meta``, so LIRPG's meta-gradient cannot reach ω."""

    def reward(self, observations, actions, extrinsic, meta=None):
        return super().reward(observations, actions, extrinsic, None)


def test_check_filler_catches_a_reward_net_that_ignores_meta():
    with pytest.raises(AssertionError, match="meta-gradient"):
        check_meta_gradient(lambda: _OwnWeightsRewardNet(observation_dim=4, num_actions=2, hidden=8))


def test_frozen_reward_net_has_no_meta_parameters_but_the_same_reward():
    learned, frozen = RewardNet(4, 2, hidden=8, seed=3), FrozenRewardNet(4, 2, hidden=8, seed=3)
    assert learned.meta_params() and not frozen.meta_params()
    obs, actions, extrinsic = torch.randn(5, 4), torch.tensor([0, 1, 1, 0, 1]), torch.zeros(5)
    torch.testing.assert_close(frozen.reward(obs, actions, extrinsic), learned.reward(obs, actions, extrinsic))


def test_discounted_returns_restart_at_episode_ends():
    rewards = torch.tensor([1.0, 0.0, 2.0, 1.0, 1.0])
    dones = torch.tensor([False, False, True, False, True])
    expected = torch.tensor([1 + 0.5 * 0 + 0.25 * 2, 0 + 0.5 * 2, 2.0, 1 + 0.5 * 1, 1.0])
    torch.testing.assert_close(discounted_returns(rewards, dones, 0.5), expected)


def test_count_bonus_is_beta_over_sqrt_visits_of_each_cell():
    bonus = CountBonus(observation_dim=9, bonus=0.5, bits=16)
    cells = torch.eye(9)
    assert len(set(bonus.buckets(cells).tolist())) == 9  # one bucket per grid cell here
    bonus.observe(cells[[0, 0, 0, 0, 3]])
    rewards = bonus.reward(cells[[0, 3, 5]], torch.zeros(3, dtype=torch.long), torch.tensor([1.0, 0.0, 0.0]))
    torch.testing.assert_close(rewards, torch.tensor([1 + 0.5 / 2, 0.5, 0.5]))  # unvisited cells count as 1


def _hand_written_lirpg_gradient(policy, reward_net, batch, lr, gamma):
    """Zheng et al.'s meta-step written out: a REINFORCE step on extrinsic + scale * tanh(f_omega), then
    the importance-weighted extrinsic objective at the new policy, differentiated with respect to omega."""
    W, b = (p.detach().clone().requires_grad_(True) for p in (policy.weight, policy.bias))
    omega = {k: v.detach().clone().requires_grad_(True) for k, v in reward_net.named_parameters()}
    inputs = torch.cat([batch.observations, F.one_hot(batch.actions, 2).double()], -1)
    hidden = torch.relu(inputs @ omega["net.0.weight"].T + omega["net.0.bias"])
    intrinsic = torch.tanh(hidden @ omega["net.2.weight"].T + omega["net.2.bias"]).squeeze(-1)
    mixed = batch.extrinsic + reward_net.scale * intrinsic

    def returns(r):
        out, running = [], 0.0
        for t in reversed(range(len(r))):
            running = r[t] + gamma * running * (0.0 if batch.dones[t] else 1.0)
            out.insert(0, running)
        g = torch.stack([torch.as_tensor(v, dtype=torch.float64) for v in out])
        return g - g.mean()

    def log_pi(W, b):
        return torch.log_softmax(batch.observations @ W.T + b, -1)[torch.arange(len(batch)), batch.actions]

    inner = -(log_pi(W, b) * returns(mixed)).mean()
    gW, gb = torch.autograd.grad(inner, (W, b), create_graph=True)
    ratio = torch.exp(log_pi(W - lr * gW, b - lr * gb) - log_pi(W, b).detach())
    outer = -(ratio * returns(batch.extrinsic)).mean()
    return dict(zip(omega, torch.autograd.grad(outer, list(omega.values()))))


def test_lirpg_meta_gradient_equals_hand_written_step_and_trainer_applies_adam():
    g = torch.Generator().manual_seed(0)
    obs = torch.randn(12, 4, generator=g, dtype=torch.float64)
    dones = torch.zeros(12, dtype=torch.bool)
    dones[[4, 11]] = True
    batch = Batch(obs, torch.randint(0, 2, (12,), generator=g), (torch.rand(12, generator=g) > 0.6).double(), dones,
                  torch.zeros(2))
    torch.manual_seed(0)
    policy = nn.Linear(4, 2).double()
    reward_net = RewardNet(4, 2, hidden=6, scale=0.5, seed=1).double()
    expected = _hand_written_lirpg_gradient(policy, reward_net, batch, lr=0.7, gamma=0.9)
    trainer = LIRPGTrainer(policy, reward_net, lr=0.7, meta_lr=0.05, gamma=0.9)
    meta = reward_net.meta_params()
    loss, _ = trainer.meta_loss(batch, meta)
    grads = dict(zip(meta, torch.autograd.grad(loss, list(meta.values()))))
    for k in expected:
        torch.testing.assert_close(grads[k], expected[k], rtol=1e-10, atol=1e-12)
    assert max(v.abs().max().item() for v in grads.values()) > 1e-5
    shadow = {k: v.detach().clone().requires_grad_(True) for k, v in meta.items()}
    adam = torch.optim.Adam(list(shadow.values()), lr=0.05)
    for k, v in shadow.items():
        v.grad = expected[k]
    adam.step()
    trainer.step(batch)
    for k, v in reward_net.named_parameters():
        torch.testing.assert_close(v.detach(), shadow[k].detach(), rtol=1e-12, atol=1e-14)


def test_grid_world_rollouts_are_seeded_and_reach_the_goal():
    env = GridWorld(size=3, max_steps=20)
    policy = nn.Linear(9, 4)
    params = dict(policy.named_parameters())
    a = env.rollout(policy, params, 5, torch.Generator().manual_seed(0))
    b = env.rollout(policy, params, 5, torch.Generator().manual_seed(0))
    assert torch.equal(a.actions, b.actions) and int(a.dones.sum()) == 5
    # extrinsic reward is 0 or 1 per episode (1: the goal was reached), and only the goal pays
    assert set(a.episode_returns.tolist()) <= {0.0, 1.0} and a.extrinsic.sum() == a.episode_returns.sum()


def test_bad_input_raises_one_clear_error():
    cases = [
        (lambda: RewardNet(observation_dim=0), r"`observation_dim` of RewardNet.*Got 0"),
        (lambda: CountBonus(bits=30), r"`bits` of CountBonus must be at most 24"),
        (lambda: build_filler("reward", "reward_nett"), "did you mean 'reward_net'"),
        (lambda: LIRPGTrainer(nn.Linear(4, 2), gamma=1.5), r"`gamma` of LIRPGTrainer.*Got 1.5"),
        (lambda: GridWorld(size=1), r"`size` of GridWorld.*Got 1"),
        (lambda: MetaDiscount(gamma=1.0), r"`gamma` of MetaDiscount must be a float in \(0, 1\).*Got 1.0"),
        (lambda: BinnedCountBonus(observation_dim=4, bins=100), r"100\*\*4 counters .*use fewer `bins`"),
        (lambda: BinnedCountBonus(observation_dim=2, low=[0.0]), r"`low` of BinnedCountBonus must be .* 2 floats"),
        (lambda: BinnedCountBonus(observation_dim=2, low=1.0, high=0.0), "needs high > low"),
    ]
    for fn, message in cases:
        with pytest.raises(ConfigError, match=message):
            fn()


# --- the binned count bonus, the meta-learned discount, the delayed-reward CartPole -----------------------

def test_binned_count_bonus_counts_grid_cells_of_continuous_observations():
    bonus = BinnedCountBonus(observation_dim=2, bonus=0.5, bins=4, low=[-1.0, 0.0], high=[1.0, 8.0])
    # bins of width 0.5 in the first coordinate, 2 in the second; outside values fall into the edge bins
    obs = torch.tensor([[-0.9, 0.1], [-0.6, 1.9], [0.1, 0.1], [-5.0, -3.0], [0.99, 7.9], [2.0, 9.0]])
    assert bonus.buckets(obs).tolist() == [0, 0, 2, 0, 15, 15]
    bonus.observe(obs[:2])
    bonus.observe(obs[:1])
    rewards = bonus.reward(obs[[0, 2, 4]], torch.zeros(3, dtype=torch.long), torch.tensor([1.0, 0.0, 0.0]))
    torch.testing.assert_close(rewards, torch.tensor([1 + 0.5 / 3 ** 0.5, 0.5, 0.5]))


def _hand_written_discount_gradient(policy, logit, batch, lr, gamma):
    """Xu et al.'s meta-gradient written out: a REINFORCE step on the extrinsic reward discounted by
    sigmoid(logit), then the importance-weighted extrinsic objective (discounted by gamma) at the new policy."""
    W, b = (p.detach().clone().requires_grad_(True) for p in (policy.weight, policy.bias))
    logit = logit.detach().clone().requires_grad_(True)

    def returns(discount):
        out, running = [], 0.0
        for t in reversed(range(len(batch))):
            running = batch.extrinsic[t] + discount * running * (0.0 if batch.dones[t] else 1.0)
            out.insert(0, running)
        g = torch.stack(out)
        return g - g.mean()

    def log_pi(W, b):
        return torch.log_softmax(batch.observations @ W.T + b, -1)[torch.arange(len(batch)), batch.actions]

    inner = -(log_pi(W, b) * returns(torch.sigmoid(logit))).mean()
    gW, gb = torch.autograd.grad(inner, (W, b), create_graph=True)
    ratio = torch.exp(log_pi(W - lr * gW, b - lr * gb) - log_pi(W, b).detach())
    outer = -(ratio * returns(torch.tensor(gamma, dtype=torch.float64))).mean()
    return torch.autograd.grad(outer, logit)[0]


def test_meta_discount_gradient_equals_hand_written_step_and_policy_uses_the_learned_discount():
    g = torch.Generator().manual_seed(1)
    obs = torch.randn(14, 4, generator=g, dtype=torch.float64)
    dones = torch.zeros(14, dtype=torch.bool)
    dones[[6, 13]] = True
    batch = Batch(obs, torch.randint(0, 2, (14,), generator=g), (torch.rand(14, generator=g) > 0.5).double(),
                  dones, torch.zeros(2))
    torch.manual_seed(0)
    policy = nn.Linear(4, 2).double()
    discount = MetaDiscount(gamma=0.7).double()
    expected = _hand_written_discount_gradient(policy, discount.logit, batch, lr=0.6, gamma=0.95)
    trainer = LIRPGTrainer(policy, discount, lr=0.6, meta_lr=0.1, gamma=0.95)
    meta = discount.meta_params()
    loss, _ = trainer.meta_loss(batch, meta)
    (grad,) = torch.autograd.grad(loss, [meta["logit"]])
    torch.testing.assert_close(grad, expected, rtol=1e-10, atol=1e-12)
    assert abs(expected.item()) > 1e-4
    # the policy step uses the discount after the meta-step (Adam's first step moves logit by meta_lr)
    before = discount.logit.item()
    metrics = trainer.step(batch)
    assert discount.logit.item() == pytest.approx(before - 0.1 * float(torch.sign(expected)), abs=1e-6)
    assert metrics["gamma"] == pytest.approx(torch.sigmoid(discount.logit).item(), abs=1e-12)


class _FakeEnv:
    """Pays reward t (the step number) at step t; the episode ends after `length` steps (truncated)."""

    def __init__(self, length):
        self.length, self.t = length, 0

    def reset(self, seed=None):
        self.t = 0
        return 0, {}

    def step(self, action):
        self.t += 1
        return self.t, float(self.t), False, self.t == self.length, {}


def test_delayed_reward_pays_the_sum_every_delay_steps_and_at_the_end():
    from autometa.learners import DelayedReward

    env = DelayedReward(_FakeEnv(length=7), delay=3)
    for _ in range(2):  # a reset starts a new count
        env.reset(seed=0)
        paid = [env.step(0)[1] for _ in range(7)]
        assert paid == [0.0, 0.0, 1 + 2 + 3, 0.0, 0.0, 4 + 5 + 6, 7.0]
    with pytest.raises(ConfigError, match="`delay` of DelayedReward"):
        DelayedReward(_FakeEnv(3), delay=0)


def test_cartpole_without_gymnasium_names_the_extra(monkeypatch):
    import sys

    from autometa.errors import BackendUnavailableError
    from autometa.learners import DelayedRewardCartPole

    monkeypatch.setitem(sys.modules, "gymnasium", None)  # as if not installed
    with pytest.raises(BackendUnavailableError, match=r"pip install 'autometa\[rl\]'"):
        DelayedRewardCartPole()


def test_delayed_cartpole_rollouts_are_seeded_and_pay_every_delay_steps():
    pytest.importorskip("gymnasium")
    from autometa.learners import DelayedRewardCartPole

    env = DelayedRewardCartPole(delay=5, max_steps=30)
    policy = nn.Linear(4, 2)
    params = dict(policy.named_parameters())
    a = env.rollout(policy, params, 4, torch.Generator().manual_seed(0))
    b = env.rollout(policy, params, 4, torch.Generator().manual_seed(0))
    c = env.rollout(policy, params, 4, torch.Generator().manual_seed(1))
    assert torch.equal(a.observations, b.observations) and torch.equal(a.actions, b.actions)
    assert int(a.dones.sum()) == 4 and a.observations.shape[1] == 4
    ends = torch.nonzero(a.dones)[:, 0].tolist()
    # every episode starts from its own reset seed, drawn from the rollout's generator
    first = lambda batch: batch.observations[[0, *(torch.nonzero(batch.dones)[:-1, 0] + 1).tolist()]]
    assert len({tuple(o.tolist()) for o in first(a)}) == 4 and not torch.equal(first(a), first(c))
    start = 0
    for i, end in enumerate(ends):
        rewards = a.extrinsic[start:end + 1]
        length = end + 1 - start
        assert a.episode_returns[i] == rewards.sum() == length <= 30  # CartPole pays 1 per step, all paid
        for t, r in enumerate(rewards.tolist(), 1):  # paid at every 5th step and at the end only
            assert r == (5.0 if t % 5 == 0 and t < length else (length - 5 * ((length - 1) // 5) if t == length
                                                                   else 0.0))
        start = end + 1
