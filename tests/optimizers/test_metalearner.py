import math

import pytest
import torch
from torch import nn

from autometa.errors import NumericalError, UnsupportedFeatureError
from autometa.learners import LEARNERS, MetaLearnerLSTM, build_learner
from autometa.nets import MLP
from autometa.tasks import TaskBatch


def tiny_tasks(n=3, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    sx = torch.randn(n, 6, 4, generator=gen, dtype=dtype)
    qx = torch.randn(n, 9, 4, generator=gen, dtype=dtype)
    sy, qy = torch.arange(6).remainder(3).repeat(n, 1), torch.arange(9).remainder(3).repeat(n, 1)
    return TaskBatch(sx, sy, qx, qy)


def learner(seed=0, dtype=torch.float32, **kwargs):
    torch.manual_seed(seed)
    return MetaLearnerLSTM(MLP(4, 3, (5,)), hidden_size=4, **kwargs).to(dtype)


def reference_query_loss(model: MetaLearnerLSTM, sx, sy, qx, qy, steps):
    """Ravi & Larochelle's update written out in float64; loss and gradient inputs are constants."""
    w = dict(model.named_parameters())
    shapes = [(k[6:], p.shape) for k, p in w.items() if k.startswith("model.")]
    c = torch.cat([w["model." + k].reshape(-1) for k, _ in shapes])

    def net_loss(flat, x, y):
        parts, offset = {}, 0
        for k, shape in shapes:
            n = math.prod(shape)
            parts[k] = flat[offset:offset + n].view(shape)
            offset += n
        hidden = torch.relu(x @ parts["features.0.weight"].T + parts["features.0.bias"])
        return nn.functional.cross_entropy(hidden @ parts["head.weight"].T + parts["head.bias"], y)

    def prep(v):
        big = v.abs() >= math.exp(-10)
        return torch.stack([torch.where(big, v.abs().clamp_min(1e-30).log() / 10, -torch.ones_like(v)),
                            torch.where(big, v.sign(), math.exp(10) * v)], -1)

    h = torch.zeros(c.numel(), model.hidden_size, dtype=c.dtype)
    m = torch.zeros_like(h)
    f_prev = torch.zeros_like(c)
    i_prev = torch.zeros_like(c)
    for _ in range(steps):
        point = c.detach().requires_grad_(True)
        loss = net_loss(point, sx, sy)
        grad = torch.autograd.grad(loss, point)[0]
        x = torch.cat([prep(grad), prep(loss.detach().expand(c.numel()))], -1)
        gates = (x @ w["input_lstm.weight_ih"].T + w["input_lstm.bias_ih"]
                 + h @ w["input_lstm.weight_hh"].T + w["input_lstm.bias_hh"])
        i, f, g, o = gates.chunk(4, dim=1)
        m = torch.sigmoid(f) * m + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(m)
        f_prev = torch.sigmoid(torch.cat([h, c[:, None], f_prev[:, None]], -1) @ w["forget_weight"]
                               + w["forget_bias"])
        i_prev = torch.sigmoid(torch.cat([h, c[:, None], i_prev[:, None]], -1) @ w["input_weight"]
                               + w["input_bias"])
        c = f_prev * c - i_prev * grad
    return net_loss(c, qx, qy)


def test_meta_gradient_equals_handwritten_float64_reference():
    model = learner(dtype=torch.float64, inner_steps=3)
    batch = tiny_tasks(2, torch.float64, seed=1)
    model.meta_backward(batch)
    got = {k: p.grad.clone() for k, p in model.named_parameters()}
    model.zero_grad()
    total = sum(reference_query_loss(model, *(t[i] for t in batch.tensors), steps=3) for i in range(2)) / 2
    total.backward()
    for k, p in model.named_parameters():
        torch.testing.assert_close(got[k], p.grad, rtol=1e-9, atol=1e-12, msg=k)
        assert p.grad.abs().sum() > 0, k


def test_adaptation_lowers_the_support_loss_and_evaluate_builds_no_graph():
    model = learner(inner_steps=2, eval_inner_steps=4)
    with torch.no_grad():
        model.input_bias.fill_(-1.0)  # a usable learning rate before any meta-training
    batch = tiny_tasks(1)
    meta = model.meta_params()
    before = model.loss_fn(model.model(batch.support_x[0]), batch.support_y[0])
    adapted = model.adapt(meta, batch.support_x[0], batch.support_y[0], steps=4)
    outputs = torch.func.functional_call(model.model, adapted, (batch.support_x[0],))
    after = model.loss_fn(outputs, batch.support_y[0])
    assert after < before
    metrics = model.evaluate(tiny_tasks(3))
    assert metrics["accuracy"].shape == (3,) and not metrics["loss"].requires_grad


def test_registered_for_configs_and_rejects_vmap():
    assert LEARNERS["metalearner_lstm"] is MetaLearnerLSTM
    built = build_learner({"name": "metalearner_lstm", "inner_steps": 2, "hidden_size": 6}, MLP(4, 3, (5,)),
                          "classification")
    assert isinstance(built, MetaLearnerLSTM) and built.hidden_size == 6
    with pytest.raises(UnsupportedFeatureError, match="batching='vmap'"):
        MetaLearnerLSTM(MLP(4, 3, (5,)), batching="vmap")
    assert MetaLearnerLSTM.SPACE["inner_steps"] == {"int": [1, 20]}


def test_non_finite_update_names_step_and_parameter():
    model = learner()
    with torch.no_grad():
        model.input_weight.fill_(float("nan"))
    batch = tiny_tasks(1)
    with pytest.raises(NumericalError, match=r"MetaLearnerLSTM .* step 1 for parameter 'features.0.weight'"):
        model.evaluate(batch)
