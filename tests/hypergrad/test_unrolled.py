"""Meta-gradients against naive float64 computations written out by hand."""

import torch
from torch import nn

from autometa.hypergrad import inner_sgd, sgd_step
from autometa.learners import FOMAML, MAML, MetaSGD, Reptile
from autometa.nets import MLP, Conv4, functional_forward

torch.set_default_dtype(torch.float32)


def naive_mlp(params, x):
    h = torch.tanh(x @ params["w1"].T + params["b1"])
    return h @ params["w2"].T + params["b2"]


def make_params(seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = {"w1": (7, 3), "b1": (7,), "w2": (2, 7), "b2": (2,)}
    return {k: torch.randn(s, generator=g, dtype=torch.float64, requires_grad=True) for k, s in shapes.items()}


def data(seed, n):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, generator=g, dtype=torch.float64), torch.randn(n, 2, generator=g, dtype=torch.float64)


def naive_maml_grad(params, lrs, steps, sx, sy, qx, qy):
    """Second-order MAML written with torch.autograd.grad(create_graph=True) step by step."""
    p = dict(params)
    for _ in range(steps):
        loss = ((naive_mlp(p, sx) - sy) ** 2).mean()
        grads = torch.autograd.grad(loss, list(p.values()), create_graph=True)
        p = {k: v - lrs[k] * g for (k, v), g in zip(p.items(), grads)}
    outer = ((naive_mlp(p, qx) - qy) ** 2).mean()
    leaves = list(params.values()) + [v for v in lrs.values() if torch.is_tensor(v) and v.requires_grad]
    return torch.autograd.grad(outer, leaves)


def engine_grad(params, lrs, steps, sx, sy, qx, qy, first_order=False, checkpoint=False):
    loss_fn = lambda p: ((naive_mlp(p, sx) - sy) ** 2).mean()
    adapted = inner_sgd(loss_fn, params, steps, lrs, first_order=first_order, checkpoint=checkpoint)
    outer = ((naive_mlp(adapted, qx) - qy) ** 2).mean()
    leaves = list(params.values()) + [v for v in lrs.values() if torch.is_tensor(v) and v.requires_grad]
    return torch.autograd.grad(outer, leaves)


def assert_close(a, b, rtol=1e-6):
    """Relative to the largest gradient entry: conv biases before batch norm have a true
    gradient of zero, so a per-tensor ratio would only measure rounding noise there."""
    scale = max(y.abs().max() for y in b)
    for x, y in zip(a, b):
        assert x.shape == y.shape
        rel = (x - y).abs().max() / scale
        assert rel < rtol, rel


def test_second_order_maml_equals_naive_float64():
    params = make_params()
    lrs = {k: 0.1 for k in params}
    (sx, sy), (qx, qy) = data(1, 5), data(2, 9)
    assert_close(engine_grad(params, lrs, 3, sx, sy, qx, qy), naive_maml_grad(params, lrs, 3, sx, sy, qx, qy))


def test_checkpointed_unroll_equals_plain_unroll():
    params = make_params()
    lrs = {k: 0.1 for k in params}
    (sx, sy), (qx, qy) = data(1, 5), data(2, 9)
    assert_close(engine_grad(params, lrs, 4, sx, sy, qx, qy, checkpoint=True),
                 engine_grad(params, lrs, 4, sx, sy, qx, qy), rtol=1e-10)


def test_meta_sgd_learning_rate_gradients_equal_naive_float64():
    params = make_params()
    g = torch.Generator().manual_seed(5)
    lrs = {k: (0.05 + 0.1 * torch.rand(v.shape, generator=g, dtype=torch.float64)).requires_grad_(True)
           for k, v in params.items()}
    (sx, sy), (qx, qy) = data(3, 5), data(4, 9)
    assert_close(engine_grad(params, lrs, 2, sx, sy, qx, qy), naive_maml_grad(params, lrs, 2, sx, sy, qx, qy))


def test_second_order_differs_from_first_order():
    params = make_params()
    lrs = {k: 0.3 for k in params}
    (sx, sy), (qx, qy) = data(1, 5), data(2, 9)
    so = engine_grad(params, lrs, 2, sx, sy, qx, qy)
    fo = engine_grad(params, lrs, 2, sx, sy, qx, qy, first_order=True)
    assert max((a - b).abs().max() for a, b in zip(so, fo)) > 1e-3


def test_first_order_is_query_gradient_at_adapted_params():
    # FOMAML's definition: the meta-gradient is grad L_query evaluated at the adapted parameters
    params = make_params()
    lrs = {k: 0.2 for k in params}
    (sx, sy), (qx, qy) = data(1, 5), data(2, 9)
    fo = engine_grad(params, lrs, 3, sx, sy, qx, qy, first_order=True)
    p = {k: v.detach() for k, v in params.items()}
    for _ in range(3):
        p = {k: v.requires_grad_(True) for k, v in p.items()}
        grads = torch.autograd.grad(((naive_mlp(p, sx) - sy) ** 2).mean(), list(p.values()))
        p = {k: (v - 0.2 * g).detach() for (k, v), g in zip(p.items(), grads)}
    p = {k: v.requires_grad_(True) for k, v in p.items()}
    ref = torch.autograd.grad(((naive_mlp(p, qx) - qy) ** 2).mean(), list(p.values()))
    assert_close(fo, ref, rtol=1e-12)


def test_sgd_step_adapts_only_selected_parameters():
    params = make_params()
    loss_fn = lambda p: (naive_mlp(p, data(1, 4)[0]) ** 2).sum()
    new = sgd_step(loss_fn, params, 0.1, adapt=lambda n: n.startswith("w2") or n.startswith("b2"))
    assert new["w1"] is params["w1"] and not torch.equal(new["w2"], params["w2"])


def _double(model: nn.Module) -> nn.Module:
    return model.double()


def test_maml_learner_on_conv4_matches_naive_loop_float64():
    torch.manual_seed(0)
    model = _double(Conv4(1, 3, hidden=4, image_size=16))
    g = torch.Generator().manual_seed(1)
    sx, qx = torch.randn(2, 3, 1, 16, 16, generator=g).double(), torch.randn(2, 6, 1, 16, 16, generator=g).double()
    sy, qy = torch.arange(3).repeat(2, 1), torch.arange(3).repeat(2, 2)
    from autometa.tasks import TaskBatch

    batch = TaskBatch(sx, sy, qx, qy)
    for mode in ("loop", "vmap"):
        learner = MAML(model, inner_lr=0.3, inner_steps=2, batching=mode)
        learner.zero_grad()
        learner.meta_backward(batch)
        got = [p.grad.clone() for p in learner.model.parameters()]
        # naive: per task, autograd.grad with create_graph through two steps, averaged
        ref = [torch.zeros_like(p) for p in model.parameters()]
        for i in range(2):
            p = dict(model.named_parameters())
            for _ in range(2):
                loss = nn.functional.cross_entropy(functional_forward(model, p, sx[i]), sy[i])
                gr = torch.autograd.grad(loss, list(p.values()), create_graph=True)
                p = {k: v - 0.3 * gg for (k, v), gg in zip(p.items(), gr)}
            outer = nn.functional.cross_entropy(functional_forward(model, p, qx[i]), qy[i]) / 2
            for r, gg in zip(ref, torch.autograd.grad(outer, list(model.parameters()))):
                r += gg
        assert_close(got, ref)


def test_reptile_meta_gradient_is_mean_parameter_difference():
    torch.manual_seed(0)
    model = MLP(1, 1, (8,)).double()
    learner = Reptile(model, inner_lr=0.05, inner_steps=3, task="regression", batching="loop")
    from autometa.tasks import Sinusoid

    batch = Sinusoid(5, 5).sample(3, torch.Generator().manual_seed(0))
    batch = type(batch)(*(t.double() for t in batch.tensors))
    learner.meta_backward(batch)
    expected = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for i in range(3):
        p = {n: v.detach().clone() for n, v in model.named_parameters()}
        for _ in range(3):
            p = {k: v.requires_grad_(True) for k, v in p.items()}
            loss = nn.functional.mse_loss(functional_forward(model, p, batch.support_x[i]), batch.support_y[i])
            gr = torch.autograd.grad(loss, list(p.values()))
            p = {k: (v - 0.05 * g).detach() for (k, v), g in zip(p.items(), gr)}
        for n, v in model.named_parameters():
            expected[n] += (v.detach() - p[n]) / 3
    for n, v in model.named_parameters():
        assert torch.allclose(v.grad, expected[n], rtol=1e-10, atol=1e-12)


def test_fomaml_learner_equals_maml_with_first_order():
    torch.manual_seed(0)
    from autometa.tasks import Sinusoid

    batch = Sinusoid(5, 5).sample(4, torch.Generator().manual_seed(0))
    model = MLP(1, 1, (8, 8))
    a = FOMAML(model, inner_lr=0.1, task="regression")
    a.meta_backward(batch)
    ga = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    b = MAML(model, inner_lr=0.1, first_order=True, task="regression")
    b.meta_backward(batch)
    assert all(torch.equal(x, p.grad) for x, p in zip(ga, model.parameters()))


def test_meta_sgd_learner_updates_learning_rates():
    torch.manual_seed(0)
    from autometa.tasks import Sinusoid

    learner = MetaSGD(MLP(1, 1, (8,)), inner_lr=0.05, task="regression")
    learner.meta_backward(Sinusoid(5, 5).sample(4, torch.Generator().manual_seed(0)))
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in learner.optimizer.lrs.values())
