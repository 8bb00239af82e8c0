import math

import numpy as np
import pytest
import torch

from autometa.data import ArrayDataset
from autometa.errors import CheckpointError, ConfigError, NumericalError
from autometa.slots.optimizer import (
    SGD,
    LSTMOptimizer,
    meta_train,
    optimize,
    preprocess_gradients,
    truncated_unrolls,
    unroll,
)
from autometa.tasks import MLPFamily, QuadraticFamily, QuadraticProblem

DIM, STEPS = 3, 4


def tiny_quadratic(dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(1, DIM, DIM, generator=gen, dtype=dtype)
    y = torch.randn(1, DIM, generator=gen, dtype=dtype)
    theta0 = torch.randn(1, DIM, generator=gen, dtype=dtype)
    return QuadraticProblem(w, y, theta0)


def lstm64(seed=0, **kwargs):
    torch.manual_seed(seed)
    return LSTMOptimizer(hidden_size=5, **kwargs).double()


def reference_meta_loss(opt, problem, steps):
    """The paper's meta-loss written out by hand in float64, gradients of f treated as constants."""
    w, y, theta = problem.weights[0], problem.targets[0], problem.init[0]
    weights = dict(opt.named_parameters())
    h = [torch.zeros(DIM, opt.hidden_size, dtype=torch.float64) for _ in range(2)]
    c = [torch.zeros(DIM, opt.hidden_size, dtype=torch.float64) for _ in range(2)]
    total = 0.0
    for _ in range(steps):
        grad = (2 * w.T @ (w @ theta - y)).detach()  # analytic gradient of ||W theta - y||^2
        rows = []
        for g in grad.tolist():
            if abs(g) >= math.exp(-10):
                rows.append([math.log(abs(g)) / 10, math.copysign(1.0, g)])
            else:
                rows.append([-1.0, math.exp(10) * g])
        x = torch.tensor(rows, dtype=torch.float64)
        for layer in range(2):
            gates = (x @ weights[f"cells.{layer}.weight_ih"].T + weights[f"cells.{layer}.bias_ih"]
                     + h[layer] @ weights[f"cells.{layer}.weight_hh"].T + weights[f"cells.{layer}.bias_hh"])
            i, f, g_, o = gates.chunk(4, dim=1)
            c[layer] = torch.sigmoid(f) * c[layer] + torch.sigmoid(i) * torch.tanh(g_)
            h[layer] = torch.sigmoid(o) * torch.tanh(c[layer])
            x = h[layer]
        theta = theta + 0.1 * (x @ weights["output.weight"].T + weights["output.bias"]).squeeze(-1)
        total = total + ((w @ theta - y) ** 2).sum()
    return total


def test_preprocessing_follows_the_paper():
    g = torch.tensor([3.0, -1e-3, 1e-6, -2e-5, 0.0])
    out = preprocess_gradients(g, p=10)
    assert torch.allclose(out[0], torch.tensor([math.log(3.0) / 10, 1.0]))
    assert torch.allclose(out[1], torch.tensor([math.log(1e-3) / 10, -1.0]))
    assert torch.allclose(out[2], torch.tensor([-1.0, math.exp(10) * 1e-6]))  # below e^-10 ~ 4.5e-5
    assert torch.allclose(out[3], torch.tensor([-1.0, -math.exp(10) * 2e-5]))
    assert torch.equal(out[4], torch.tensor([-1.0, 0.0]))


def test_first_order_meta_gradient_equals_handwritten_float64_unroll():
    opt, problem = lstm64(), tiny_quadratic()
    meta_loss, *_ = unroll(opt, problem, problem.init_params(), opt.init(problem.init_params()), 0, STEPS)
    got = torch.autograd.grad(meta_loss, list(opt.parameters()))
    expected_loss = reference_meta_loss(opt, problem, STEPS)
    expected = torch.autograd.grad(expected_loss, list(opt.parameters()))
    torch.testing.assert_close(meta_loss, expected_loss, rtol=1e-12, atol=1e-12)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


def test_second_order_meta_gradient_equals_finite_differences():
    opt, problem = lstm64(seed=1), tiny_quadratic(seed=1)

    def meta_loss():
        params = problem.init_params()
        return unroll(opt, problem, params, opt.init(params), 0, STEPS, second_order=True)[0]

    analytic = torch.autograd.grad(meta_loss(), list(opt.parameters()))
    h = 1e-6
    checked = 0
    for (name, param), grad in zip(opt.named_parameters(), analytic):
        for index in [0, param.numel() - 1]:
            flat = param.data.view(-1)
            original = flat[index].item()
            flat[index] = original + h
            plus = meta_loss().item()
            flat[index] = original - h
            minus = meta_loss().item()
            flat[index] = original
            numeric = (plus - minus) / (2 * h)
            assert grad.view(-1)[index].item() == pytest.approx(numeric, rel=1e-5, abs=1e-7), name
            checked += 1
    assert checked == 2 * len(analytic)


def test_truncation_cuts_the_gradient_between_unrolls():
    """By construction: unroll 2's meta-loss reaches neither theta_0 nor unroll 1's iterates."""
    opt, problem = lstm64(seed=2), tiny_quadratic(seed=2)
    problem.init.requires_grad_(True)  # a leaf at the start of unroll 1
    chunks = truncated_unrolls(opt, problem, horizon=2 * STEPS, unroll_length=STEPS)
    first, _ = next(chunks)
    assert torch.autograd.grad(first, problem.init, retain_graph=True)[0].abs().sum() > 0
    second, _ = next(chunks)
    assert torch.autograd.grad(second, problem.init, allow_unused=True)[0] is None
    got = torch.autograd.grad(second, list(opt.parameters()))

    # Reference: unroll 2 restarted from copies of the boundary values as fresh constants.
    params = {"theta": problem.init.detach().clone()}
    _, boundary_params, boundary_state, _ = unroll(opt, problem, params, opt.init(params), 0, STEPS)
    constants = {k: v.detach().clone() for k, v in boundary_params.items()}
    constant_state = {k: v.detach().clone() for k, v in boundary_state.items()}
    restarted, *_ = unroll(opt, problem, constants, constant_state, STEPS, STEPS)
    expected = torch.autograd.grad(restarted, list(opt.parameters()))
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)

    # Without the cut the gradient differs, so the comparison above can fail.
    full, *_ = unroll(opt, problem, {"theta": problem.init.detach().clone()},
                      opt.init(params), 0, 2 * STEPS)
    untruncated_first, p_mid, s_mid, _ = unroll(opt, problem, {"theta": problem.init.detach().clone()},
                                                opt.init(params), 0, STEPS)
    untruncated_second, *_ = unroll(opt, problem, p_mid, s_mid, STEPS, STEPS)
    leaked = torch.autograd.grad(untruncated_second, list(opt.parameters()))
    assert any(not torch.allclose(a, b) for a, b in zip(leaked, expected))
    torch.testing.assert_close(full, untruncated_first + untruncated_second)


def test_non_finite_update_names_step_and_parameter():
    opt = LSTMOptimizer(hidden_size=4)
    params = {"layer.weight": torch.zeros(3), "layer.bias": torch.zeros(2)}
    state = opt.init(params)
    grads = {k: torch.ones_like(v) for k, v in params.items()}
    params, state = opt.update(grads, state, params)  # step 1 is fine
    grads["layer.bias"] = torch.tensor([1.0, float("inf")])
    with torch.no_grad():
        opt.output.bias.fill_(float("nan"))
    with pytest.raises(NumericalError, match=r"step 2 for parameter 'layer.weight'") as info:
        opt.update(grads, state, params)
    assert isinstance(info.value, FloatingPointError)
    with pytest.raises(NumericalError, match=r"'layer.bias'.*already NaN/inf"):
        opt.update({"layer.bias": grads["layer.bias"]}, opt.init({"layer.bias": params["layer.bias"]}),
                   {"layer.bias": params["layer.bias"]})


def test_save_and_load_roundtrip(tmp_path):
    opt = LSTMOptimizer(hidden_size=6, output_scale=0.05)
    path = tmp_path / "lstm.pt"
    opt.save(path)
    loaded = LSTMOptimizer.load(path)
    assert loaded.config() == opt.config()
    params = {"w": torch.randn(5, generator=torch.Generator().manual_seed(0))}
    grads = {"w": torch.randn(5, generator=torch.Generator().manual_seed(1))}
    a, _ = opt.update(grads, opt.init(params), params)
    b, _ = loaded.update(grads, loaded.init(params), params)
    assert torch.equal(a["w"], b["w"])
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not an LSTMOptimizer checkpoint"):
        LSTMOptimizer.load(tmp_path / "other.pt")


def test_meta_train_is_seeded_and_lowers_the_loss():
    family = QuadraticFamily(dim=4)

    def train():
        torch.manual_seed(0)
        opt = LSTMOptimizer(hidden_size=8)
        return opt, meta_train(opt, family, iterations=8, seed=3, horizon=10, unroll_length=5,
                               tasks_per_iteration=16, meta_lr=0.01)

    opt_a, history_a = train()
    _, history_b = train()
    assert [r["meta_loss"] for r in history_a] == [r["meta_loss"] for r in history_b]
    problem = family.sample(32, 10, torch.Generator().manual_seed(9))
    torch.manual_seed(0)
    untrained = optimize(LSTMOptimizer(hidden_size=8), problem, 10)[-1].mean()
    assert optimize(opt_a, problem, 10)[-1].mean() < untrained
    with pytest.raises(ConfigError, match="multiple of unroll_length"):
        meta_train(opt_a, family, iterations=1, seed=0, horizon=10, unroll_length=3)


def test_optimize_matches_an_untracked_unroll_and_sgd_by_hand():
    problem = tiny_quadratic(torch.float32)
    curves = optimize(SGD(lr=0.01), problem, 3)
    _, _, _, losses = unroll(SGD(lr=0.01), problem, problem.init_params(), {"step": torch.zeros(())},
                             0, 3, track=False)
    assert np.allclose(curves[:, 0].numpy(), losses)
    theta, w, y = problem.init[0], problem.weights[0], problem.targets[0]
    for _ in range(3):
        theta = theta - 0.01 * 2 * w.T @ (w @ theta - y)
    assert curves[-1, 0].item() == pytest.approx(((w @ theta - y) ** 2).sum().item(), rel=1e-5)


def test_mlp_problem_equals_torch_modules():
    gen = torch.Generator().manual_seed(0)
    data = ArrayDataset(torch.rand(40, 1, 4, 4, generator=gen).numpy(), np.arange(40) % 3)
    family = MLPFamily(data, hidden=(5, 6), activation="relu", batch_size=8)
    problem = family.sample(2, horizon=3, generator=gen)
    params = problem.init_params()
    net = torch.nn.Sequential(torch.nn.Linear(16, 5), torch.nn.ReLU(), torch.nn.Linear(5, 6), torch.nn.ReLU(),
                              torch.nn.Linear(6, 3))
    with torch.no_grad():
        for i, layer in enumerate([net[0], net[2], net[4]]):
            layer.weight.copy_(params[f"layer{i}.weight"][1].T)
            layer.bias.copy_(params[f"layer{i}.bias"][1, 0])
    index = problem.batch_indices[2, 1]
    expected = torch.nn.functional.cross_entropy(net(problem.inputs[index]), problem.labels[index])
    assert problem.loss(params, 2)[1].item() == pytest.approx(expected.item(), rel=1e-6)
    with pytest.raises(ConfigError, match="step 4"):
        problem.loss(params, 4)
    with pytest.raises(ConfigError, match="activation"):
        MLPFamily(data, activation="gelu")


def test_lstm_optimizer_space_and_arguments():
    assert LSTMOptimizer.space()["hidden_size"] == {"int": [5, 64]}
    with pytest.raises(ConfigError, match="hidden_size"):
        LSTMOptimizer(hidden_size=0)
    with pytest.raises(ConfigError, match="output_scale"):
        LSTMOptimizer(output_scale=-1.0)
    assert set(LSTMOptimizer(hidden_size=3).meta_params()) >= {"cells.0.weight_ih", "output.weight"}
