"""The L2O learner and its optimizee families, through the run loop and the estimators."""

import math

import numpy as np
import pytest
import torch

from autometa.data import ArrayDataset
from autometa.errors import ConfigError
from autometa.experiment import run_experiment
from autometa.hypergrad import InnerProblem, Unrolled, solve
from autometa.learners import L2O, build_learner
from autometa.nets import MLP
from autometa.tasks import MLPFamily, QuadraticFamily, fresh_init, make_tasks, quadratic_loss

QUADRATIC_RUN = {
    "tasks": {"name": "l2o_quadratic", "dim": 4},
    "learner": {"name": "l2o", "optimizer": {"name": "lstm", "hidden_size": 8},
                "estimator": {"name": "truncated", "length": 5, "horizon": 10}, "eval_steps": 10, "curve_every": 5},
    "outer": {"lr": 0.01, "meta_batch": 16, "steps": 8},
    "run": {"validate_every": 0, "test_tasks": 32, "eval_batch": 32, "progress": False},
}


def result_seed():
    from autometa.experiment._config import DEFAULTS

    return DEFAULTS["run"]["test_seed"]


def tiny_images(n=40, classes=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return ArrayDataset(torch.rand(n, 1, 4, 4, generator=gen).numpy(), np.arange(n) % classes)


def test_meta_training_through_the_run_loop_is_seeded_and_lowers_the_loss():
    a, b = run_experiment(QUADRATIC_RUN), run_experiment(QUADRATIC_RUN)
    assert a["test"]["loss"] == b["test"]["loss"]
    untrained = run_experiment({**QUADRATIC_RUN, "outer": {**QUADRATIC_RUN["outer"], "steps": 0}})
    assert a["test"]["loss"]["mean"] < untrained["test"]["loss"]["mean"]
    assert set(a["test"]) == {"loss", "loss_step_0", "loss_step_5", "loss_step_10"}
    assert a["test"]["loss_step_0"] == untrained["test"]["loss_step_0"]  # same held-out problems


def test_a_hand_crafted_rule_is_only_tested_and_equals_sgd_by_hand():
    config = {**QUADRATIC_RUN, "learner": {**QUADRATIC_RUN["learner"], "optimizer": {"name": "sgd", "lr": 0.01}}}
    result = run_experiment(config)
    assert result["steps"] == 0  # nothing to meta-train
    family = QuadraticFamily(dim=4)
    batch = next(family.episodes(32, 32, result_seed()))
    theta, w, y = batch.info["init"], batch.support_x, batch.support_y
    for _ in range(10):
        theta = theta - 0.01 * 2 * (w.transpose(1, 2) @ ((w @ theta[..., None])[..., 0] - y)[..., None])[..., 0]
    assert result["test"]["loss"]["mean"] == pytest.approx(float(quadratic_loss(theta, w, y).mean()), rel=1e-5)


def test_sweep_tunes_a_hand_crafted_rule_on_optimizees():
    import autometa

    config = {**QUADRATIC_RUN, "learner": {**QUADRATIC_RUN["learner"], "optimizer": {"name": "sgd", "lr": 0.01}}}
    result = autometa.search(config, {"learner.optimizer.lr": {"float": [0.001, 0.05], "log": True}}, n_trials=2,
                             metric="test.loss", seed=0)
    assert len(result.trials) == 2 and result.best_value > 0


def test_shipped_run_config_builds():
    from pathlib import Path

    from autometa.experiment import load_config
    from autometa.experiment._run import build_experiment

    path = Path(__file__).parents[2] / "experiments" / "optimizers" / "l2o_quadratic_lstm.yaml"
    exp = build_experiment(load_config(path))
    assert isinstance(exp.learner, L2O) and exp.learner.estimator.horizon == 100


def test_stepwise_problems_get_the_step_index_from_every_estimator():
    """The inner gradient of step t is taken on minibatch t, the outer loss after n steps on minibatch n."""
    targets = torch.tensor([1.0, -2.0, 3.0, 0.5], dtype=torch.float64)
    meta = {"lr": torch.tensor(0.1, dtype=torch.float64, requires_grad=True)}
    problem = InnerProblem(
        init=lambda m: {"x": torch.zeros((), dtype=torch.float64)},
        inner_loss=lambda p, m, t: (p["x"] - targets[t]) ** 2,
        outer_loss=lambda p, m, t: ((p["x"] - targets[t]) ** 2, {}),
        init_state=lambda p, m: {}, update=lambda g, s, p, m: ({"x": p["x"] - m["lr"] * g["x"]}, s),
        steps=3, stepwise=True)
    x = torch.zeros((), dtype=torch.float64)
    for t in range(3):
        x = x - meta["lr"] * 2 * (x - targets[t])
    expected = (x - targets[3]) ** 2
    torch.testing.assert_close(solve(problem, meta)["x"], x)
    torch.testing.assert_close(Unrolled()(problem, meta)[0], expected)


def test_mlp_family_streams_and_held_out_images():
    data = tiny_images()
    family = MLPFamily(data, steps=3, batch_size=8, queries=5)
    batch = family.sample(2, torch.Generator().manual_seed(0))
    assert batch.support_x.shape == (2, 4, 8, 16) and batch.support_y.shape == (2, 4, 8)
    assert batch.query_x.shape == (2, 5, 16) and batch.info["init_seed"].shape == (2,)
    learner = L2O(MLP(16, 3, (5,), "relu"), optimizer={"name": "sgd", "lr": 0.1}, eval_steps=3, curve_every=1)
    params = learner.init_params(batch)
    net = MLP(16, 3, (5,), "relu")
    net.load_state_dict({k: v[1] for k, v in params.items()})
    expected = torch.nn.functional.cross_entropy(net(batch.support_x[1, 2]), batch.support_y[1, 2])
    assert learner.losses(params, batch, 2)[1].item() == pytest.approx(expected.item(), rel=1e-6)
    with pytest.raises(ConfigError, match="step 4"):
        learner.losses(params, batch, 4)
    metrics = learner.evaluate(batch)
    assert set(metrics) == {"loss", "loss_step_0", "loss_step_1", "loss_step_2", "loss_step_3", "query_loss",
                            "accuracy"}
    assert all(v.shape == (2,) for v in metrics.values())


def test_fresh_init_is_seeded_and_follows_the_linear_default_range():
    net = MLP(16, 3, (5,), "sigmoid")
    a, b, c = fresh_init(net, 1), fresh_init(net, 1), fresh_init(net, 2)
    assert all(torch.equal(a[k], b[k]) for k in a) and not torch.equal(a["head.weight"], c["head.weight"])
    assert a["features.0.weight"].abs().max() <= 1 / math.sqrt(16) and a["head.bias"].abs().max() <= 1 / math.sqrt(5)
    assert a["features.0.weight"].abs().max() > 0.8 / math.sqrt(16)  # uses the range, not a smaller one


def test_mnist_family_tests_on_held_out_images(monkeypatch):
    loaded = []

    def fake_load(name, train=True, **kwargs):
        loaded.append((name, train))
        return tiny_images(seed=0 if train else 1)

    monkeypatch.setattr("autometa.tasks._factory.load_dataset", fake_load)
    spec = {"name": "l2o_mlp", "dataset": "fake_mnist_for_test", "steps": 2, "batch_size": 4}
    train, test = make_tasks(spec, "train"), make_tasks(spec, "test")
    assert not torch.equal(train.inputs, test.inputs) and ("fake_mnist_for_test", False) in loaded
    same = make_tasks({**spec, "held_out": False}, "test")
    assert torch.equal(same.inputs, train.inputs)


def test_learned_rates_train_through_l2o_on_networks():
    data = tiny_images()
    batch = MLPFamily(data, steps=4, batch_size=8, queries=5).sample(2, torch.Generator().manual_seed(0))
    learner = L2O(MLP(16, 3, (5,), "relu"), optimizer={"name": "learned_rates", "lr": 0.1},
                  estimator={"name": "truncated", "length": 2, "horizon": 4})
    assert set(learner.meta_params()) == {f"optimizer.lrs.{k.replace('.', '__')}" for k, _ in
                                          learner.model.named_parameters()}
    learner.meta_backward(batch)
    grads = [p.grad for p in learner.meta_params().values()]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)
    assert not any(p.requires_grad for p in learner.model.parameters())  # each problem draws its own init


def test_conformance_deterministic_meta_gradient_and_save_reload(tmp_path):
    """The learners' conformance checks, on the tasks L2O takes (tests/learners skips it)."""
    batch = QuadraticFamily(dim=3).sample(4, torch.Generator().manual_seed(0))

    def make(seed):
        torch.manual_seed(seed)
        return L2O(torch.nn.Linear(1, 1), optimizer={"name": "lstm", "hidden_size": 4}, task="quadratic",
                   estimator={"name": "truncated", "length": 3, "horizon": 6}, eval_steps=6, curve_every=3)

    grads = []
    for _ in range(2):
        learner = make(0)
        learner.meta_backward(batch)
        grads.append([p.grad.clone() for p in learner.optimizer.parameters()])
    assert all(torch.equal(a, b) and a.abs().sum() > 0 for a, b in zip(*grads))
    path = tmp_path / "l2o.pt"
    torch.save(learner.state_dict(), path)
    other = make(1)
    assert not torch.equal(other.evaluate(batch)["loss"], learner.evaluate(batch)["loss"])  # weights matter
    other.load_state_dict(torch.load(path, weights_only=True))
    a, b = learner.evaluate(batch), other.evaluate(batch)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ConfigError, match="spam"):
        build_learner({"name": "l2o", "spam": 1}, torch.nn.Linear(1, 1), "quadratic")


def test_bad_settings_are_config_errors():
    with pytest.raises(ConfigError, match="truncated, unrolled or es"):
        L2O(MLP(4, 2, (3,)), estimator="implicit")
    with pytest.raises(ConfigError, match="coordinatewise"):
        L2O(MLP(4, 2, (3,)), optimizer="learned_rates", task="quadratic")
    with pytest.raises(ConfigError, match="l2o_quadratic or l2o_mlp"):
        build_learner({"name": "l2o"}, MLP(1, 1), "regression")
    with pytest.raises(ValueError, match="eval_steps"):
        L2O(MLP(4, 2, (3,)), eval_steps=0)


def test_a_run_resumed_inside_a_truncated_bptt_problem_matches_an_uninterrupted_one(tmp_path):
    # horizon 10, length 5: each problem spans two meta-steps, so after 3 steps a problem is half done
    # and the resumed run must continue it (its tasks, iterates and LSTM state), not start a new one
    full = run_experiment(QUADRATIC_RUN, tmp_path / "full")
    part = tmp_path / "part"
    run_experiment(QUADRATIC_RUN, part, overrides=["outer.steps=3"])
    resumed = run_experiment(QUADRATIC_RUN, part, resume=True, overrides=["outer.steps=8"])
    assert resumed["resumed_from_step"] == 3
    assert resumed["test"]["loss"] == full["test"]["loss"]
