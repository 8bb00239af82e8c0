import torch
from torch import nn

from autometa.nets import MLP, BatchNorm2d, Conv4, build_net, functional_forward, params_of


def test_conv4_shapes_and_functional_equals_stateful():
    torch.manual_seed(0)
    net = Conv4(1, 5)
    x = torch.randn(6, 1, 28, 28)
    assert net(x).shape == (6, 5) and net.feature_dim == 64
    assert torch.allclose(functional_forward(net, params_of(net), x), net(x))
    assert Conv4(1, None)(x).shape == (6, 64)
    assert [n for n, _ in net.named_parameters() if n.startswith("head.")] == ["head.weight", "head.bias"]


def test_batch_norm_uses_each_batch_statistics_and_matches_torch():
    torch.manual_seed(0)
    x = torch.randn(8, 3, 5, 5) * 4 + 2
    ours, ref = BatchNorm2d(3), nn.BatchNorm2d(3, track_running_stats=False)
    assert torch.allclose(ours(x), ref(x), atol=1e-6)


def test_vmap_over_tasks_equals_loop_including_second_order():
    torch.manual_seed(0)
    net = Conv4(1, 3, hidden=4, image_size=16).double()
    xs = torch.randn(3, 4, 1, 16, 16, dtype=torch.float64)
    params = params_of(net)

    def task_out(p, x):
        inner = torch.func.grad(lambda q: functional_forward(net, q, x).pow(2).mean())(p)
        adapted = {k: v - 0.5 * inner[k] for k, v in p.items()}
        return functional_forward(net, adapted, x).sum()

    batched = torch.func.vmap(task_out, in_dims=(None, 0))(params, xs).sum()
    grads_v = torch.autograd.grad(batched, list(params.values()))
    looped = sum(task_out(params, x) for x in xs)
    grads_l = torch.autograd.grad(looped, list(params.values()))
    scale = max(g.abs().max() for g in grads_l)
    assert torch.allclose(batched, looped)
    assert max((a - b).abs().max() for a, b in zip(grads_v, grads_l)) / scale < 1e-10


def test_build_net_from_config():
    assert isinstance(build_net({"name": "mlp", "hidden": [40, 40]}, (1,), 1), MLP)
    assert isinstance(build_net({}, (1, 28, 28), 5), Conv4)
    import pytest

    from autometa.errors import ConfigError

    with pytest.raises(ConfigError, match="conv4"):
        build_net({"name": "conv4"}, (1,), 1)
    with pytest.raises(ConfigError, match="Unknown model"):
        build_net({"name": "resnet"}, (1, 28, 28), 1)
