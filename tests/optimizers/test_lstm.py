import math

import pytest
import torch

from autometa.errors import CheckpointError, ConfigError, NumericalError
from autometa.hypergrad import TruncatedBPTT
from autometa.learners import L2O
from autometa.slots.optimizer import LSTMOptimizer, preprocess_gradients
from autometa.tasks import TaskBatch

DIM, STEPS = 3, 4


def tiny_quadratic(dtype=torch.float64, seed=0):
    """One quadratic ||W theta - y||^2 as a task batch of the L2O learner."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(1, DIM, DIM, generator=gen, dtype=dtype)
    y = torch.randn(1, DIM, generator=gen, dtype=dtype)
    theta0 = torch.randn(1, DIM, generator=gen, dtype=dtype)
    return TaskBatch(w, y, w, y, {"init": theta0})


def lstm64(seed=0, **kwargs):
    torch.manual_seed(seed)
    return LSTMOptimizer(hidden_size=5, **kwargs).double()


def learner64(opt, length=STEPS, horizon=STEPS, first_order=True):
    estimator = TruncatedBPTT(length=length, horizon=horizon, first_order=first_order)
    return L2O(torch.nn.Linear(1, 1), optimizer=opt, estimator=estimator, task="quadratic")


def meta_gradient(learner):
    """What one meta-step of the learner writes into the LSTM weights' ``.grad``."""
    return [p.grad.clone() for p in learner.optimizer.parameters()]


def hand_unroll(opt, w, y, theta, state, steps):
    """The paper's meta-loss written out with the optimizer's update, gradients of f as constants."""
    total = 0.0
    for _ in range(steps):
        grad = (2 * w.T @ (w @ theta[0] - y)).detach()[None]
        new, state = opt.update({"theta": grad}, state, {"theta": theta})
        theta = new["theta"]
        total = total + ((w @ theta[0] - y) ** 2).sum()
    return total, theta, state


def last_iterate(opt, problem, steps=STEPS):
    theta0 = problem.info["init"]
    _, theta, _ = hand_unroll(opt, problem.support_x[0], problem.support_y[0], theta0.clone(),
                              opt.init({"theta": theta0}), steps)
    return theta[0].detach()


def reference_meta_loss(opt, problem, steps):
    """The paper's meta-loss written out by hand in float64, gradients of f treated as constants."""
    w, y, theta = problem.support_x[0], problem.support_y[0], problem.info["init"][0]
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
    """Truncated BPTT through the L2O learner = the paper's meta-loss differentiated by hand."""
    opt, problem = lstm64(), tiny_quadratic()
    learner = learner64(opt)
    metrics = learner.meta_backward(problem)
    got = meta_gradient(learner)
    expected_loss = reference_meta_loss(opt, problem, STEPS)
    expected = torch.autograd.grad(expected_loss / STEPS, list(opt.parameters()))  # mean over the truncation
    fresh = learner64(opt)
    value, _ = fresh.estimator(fresh.problem(problem), fresh.meta_params())
    torch.testing.assert_close(value, expected_loss / STEPS, rtol=1e-12, atol=1e-12)
    assert metrics["loss"] == pytest.approx(float(((problem.support_x[0] @ last_iterate(opt, problem)
                                                    - problem.support_y[0]) ** 2).sum()), rel=1e-9)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


def test_second_order_meta_gradient_equals_finite_differences():
    opt, problem = lstm64(seed=1), tiny_quadratic(seed=1)

    def meta_loss():
        learner = learner64(opt, first_order=False)
        return learner.estimator(learner.problem(problem), learner.meta_params())[0]

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
    # the first-order estimate differs: the comparison above sees the Hessian terms
    first = learner64(opt, first_order=True)
    first_grads = torch.autograd.grad(first.estimator(first.problem(problem), first.meta_params())[0],
                                      list(opt.parameters()))
    assert any(not torch.allclose(a, b) for a, b in zip(first_grads, analytic))


def test_truncation_cuts_the_gradient_between_unrolls():
    """The second truncation's meta-gradient reaches neither theta_0 nor the first truncation's iterates."""
    opt, problem = lstm64(seed=2), tiny_quadratic(seed=2)
    learner = learner64(opt, length=STEPS, horizon=2 * STEPS)
    learner.meta_backward(problem)
    opt.zero_grad()
    other = tiny_quadratic(seed=3)  # ignored: the problem in progress continues
    learner.meta_backward(other)
    got = meta_gradient(learner)

    # Reference: unroll 2 restarted by hand from copies of the boundary values as fresh constants.
    w, y, theta0 = problem.support_x[0], problem.support_y[0], problem.info["init"]
    _, boundary, state = hand_unroll(opt, w, y, theta0.clone(), opt.init({"theta": theta0}), STEPS)
    constants = {k: v.detach().clone() for k, v in state.items()}
    restarted, _, _ = hand_unroll(opt, w, y, boundary.detach().clone(), constants, STEPS)
    expected = torch.autograd.grad(restarted / STEPS, list(opt.parameters()))
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-13)

    # Without the cut the gradient differs, so the comparison above can fail.
    _, mid, mid_state = hand_unroll(opt, w, y, theta0.clone(), opt.init({"theta": theta0}), STEPS)
    untruncated, _, _ = hand_unroll(opt, w, y, mid, mid_state, STEPS)
    leaked = torch.autograd.grad(untruncated / STEPS, list(opt.parameters()))
    assert any(not torch.allclose(a, b) for a, b in zip(leaked, expected))

    # after the horizon the next meta-step starts the new problem
    learner.meta_backward(other)
    assert learner._problem is other


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


@pytest.mark.parametrize("damage", ["missing", "truncated", "pickle"])
def test_load_of_a_damaged_file_is_one_checkpoint_error(damage, tmp_path):
    path = tmp_path / "lstm.pt"
    if damage == "truncated":
        LSTMOptimizer(hidden_size=6).save(path)
        path.write_bytes(path.read_bytes()[:80])
    elif damage == "pickle":
        torch.save({"class": "LSTMOptimizer", "payload": object()}, path)  # refused by weights_only
    with pytest.raises(CheckpointError, match="lstm.pt") as info:
        LSTMOptimizer.load(path)
    assert "LSTMOptimizer.save()" in str(info.value)


def test_lstm_optimizer_space_and_arguments():
    assert LSTMOptimizer.space()["hidden_size"] == {"int": [5, 64]}
    with pytest.raises(ConfigError, match="hidden_size"):
        LSTMOptimizer(hidden_size=0)
    with pytest.raises(ConfigError, match="output_scale"):
        LSTMOptimizer(output_scale=-1.0)
    assert set(LSTMOptimizer(hidden_size=3).meta_params()) >= {"cells.0.weight_ih", "output.weight"}
