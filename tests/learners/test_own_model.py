"""A user's own network (Linear-BatchNorm1d-ReLU, as in learn2learn's examples) and own tensors."""

import copy
import logging
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from autometa.errors import AutometaError, TaskSpecError, UnsupportedFeatureError
from autometa.hypergrad import default_batching
from autometa.learners import MAML, ProtoNet, Reptile, iMAML
from autometa.tasks import TaskBatch

ROOT = Path(__file__).resolve().parents[2]


def bn_net(seed=0, out=1):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(2, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, out))


def regression(tasks=4, n=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(tasks, 2 * n, 2, generator=g)
    y = torch.sin(x.sum(-1, keepdim=True))
    return x[:, :n], y[:, :n], x[:, n:], y[:, n:]


def classification(tasks=3, ways=2, shots=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(ways).repeat_interleave(shots).repeat(tasks, 1)
    return torch.randn(tasks, ways * shots, 2, generator=g), y, torch.randn(tasks, ways * shots, 2, generator=g), y


def buffers(net):
    return {k: v.clone() for k, v in net.named_buffers()}


def grads(learner):
    return {n: p.grad.clone() for n, p in learner.named_parameters()}


# ----------------------------------------------------------------------------- batching

def test_auto_batching_runs_batch_norm_with_running_statistics_as_the_loop():
    batch = regression()
    results = {}
    for mode in ("auto", "loop"):
        learner = MAML(bn_net(), inner_lr=0.05, task="regression", batching=mode)
        learner.meta_backward(batch)
        results[mode] = grads(learner)
    for k in results["loop"]:
        torch.testing.assert_close(results["auto"][k], results["loop"][k], rtol=1e-5, atol=1e-7)


def test_second_order_vmap_over_torch_batch_norm_is_refused_first_order_allowed():
    # torch 2.13's batch norm has a wrong second-order gradient under vmap (3e-3 relative)
    with pytest.raises(UnsupportedFeatureError, match="batching='loop'"):
        MAML(bn_net(), inner_lr=0.05, task="regression", batching="vmap").meta_backward(regression())
    results = {}
    for mode in ("vmap", "loop"):
        learner = MAML(bn_net(), inner_lr=0.05, task="regression", batching=mode, first_order=True)
        learner.meta_backward(regression())
        results[mode] = grads(learner)
    for k in results["loop"]:
        torch.testing.assert_close(results["vmap"][k], results["loop"][k], rtol=1e-5, atol=1e-7)


class Counter(nn.Module):
    """A layer of the user's own kind that writes a buffer in place in every forward pass."""

    def __init__(self):
        super().__init__()
        self.register_buffer("calls", torch.zeros(()))

    def forward(self, x):
        self.calls += 1
        return x


def counting_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(2, 8), Counter(), nn.Tanh(), nn.Linear(8, 1))


def test_auto_batching_falls_back_to_the_loop_for_buffers_of_unknown_kind(caplog):
    net = counting_net()
    with caplog.at_level(logging.INFO, logger="autometa"):
        assert default_batching(net, "cpu") == "loop"
    assert "loop" in caplog.text and "Sequential" in caplog.text
    assert default_batching(bn_net(), "cpu") == "loop"
    torch.manual_seed(0)
    assert default_batching(nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1)), "cpu") == "vmap"
    learner = MAML(net, inner_lr=0.05, task="regression")
    learner.meta_backward(regression())
    learner.evaluate(regression())
    assert net[1].calls.item() == 0  # and the counter was not changed


def test_explicit_vmap_on_an_in_place_forward_names_the_loop():
    learner = MAML(counting_net(), inner_lr=0.05, task="regression", batching="vmap")
    with pytest.raises(UnsupportedFeatureError, match="batching='loop'"):
        learner.meta_backward(regression())


# ----------------------------------------------------------------------------- buffers

@pytest.mark.parametrize("mode", ["loop", "vmap", "threads"])
@pytest.mark.parametrize("train", [True, False])
def test_meta_backward_and_evaluate_never_change_buffers(mode, train):
    first_order = mode == "vmap"  # see test_second_order_vmap_over_torch_batch_norm_is_refused
    net = bn_net()
    with torch.no_grad():  # running statistics that differ from the initial ones
        net[1].running_mean.fill_(0.3)
        net[1].running_var.fill_(2.0)
    net.train(train)
    before = buffers(net)
    learner = MAML(net, inner_lr=0.05, task="regression", batching=mode, first_order=first_order)
    learner.meta_backward(regression())
    learner.evaluate(regression())
    with torch.no_grad():
        learner.evaluate(regression())
    after = buffers(net)
    assert all(torch.equal(before[k], after[k]) for k in before), {k: after[k] for k in after}
    assert net[1].track_running_stats and net.training == train


def test_train_mode_uses_batch_statistics_and_eval_mode_the_stored_ones():
    batch = regression()
    net = bn_net()
    # train(): the same as a network whose batch norm keeps no running statistics at all
    plain = copy.deepcopy(net)
    plain[1] = nn.BatchNorm1d(16, track_running_stats=False)
    plain[1].load_state_dict({k: v for k, v in net[1].state_dict().items() if k in ("weight", "bias")})
    train_loss = MAML(net, inner_lr=0.05, task="regression").evaluate(batch)["loss"]
    torch.testing.assert_close(train_loss, MAML(plain, inner_lr=0.05, task="regression").evaluate(batch)["loss"])
    # eval(): the stored running statistics are used, so changing them changes the result
    net.eval()
    eval_loss = MAML(net, inner_lr=0.05, task="regression").evaluate(batch)["loss"]
    with torch.no_grad():
        net[1].running_mean.fill_(1.0)
    shifted = MAML(net, inner_lr=0.05, task="regression").evaluate(batch)["loss"]
    assert not torch.allclose(train_loss, eval_loss) and not torch.allclose(eval_loss, shifted)


def test_threads_replicas_follow_the_train_eval_mode():
    batch = regression()
    net = bn_net()
    losses = {}
    for train in (True, False, True):
        net.train(train)
        for mode in ("loop", "threads"):
            losses[train, mode] = MAML(net, inner_lr=0.05, task="regression", batching=mode).evaluate(batch)["loss"]
        torch.testing.assert_close(losses[train, "threads"], losses[train, "loop"])


# ----------------------------------------------------------------------------- targets

@pytest.mark.parametrize("make", [lambda net: MAML(net, inner_lr=0.05), lambda net: Reptile(net),
                                  lambda net: iMAML(net)])
def test_float_targets_with_the_default_classification_task_say_what_to_pass(make):
    learner = make(bn_net())
    with pytest.raises(TaskSpecError, match="task='regression'") as info:
        learner.meta_backward(regression())
    assert isinstance(info.value, ValueError)
    with pytest.raises(TaskSpecError, match="task='regression'"):
        learner.evaluate(regression())


def test_integer_targets_with_regression_say_what_to_pass():
    learner = MAML(bn_net(out=2), inner_lr=0.05, task="regression")
    with pytest.raises(TaskSpecError, match="task='classification'"):
        learner.meta_backward(classification())


def test_regression_targets_without_output_dimension_are_refused():
    sx, sy, qx, qy = regression()
    learner = MAML(bn_net(), inner_lr=0.05, task="regression")
    with pytest.raises(TaskSpecError, match=r"unsqueeze\(-1\)"):
        learner.meta_backward((sx, sy.squeeze(-1), qx, qy.squeeze(-1)))


def test_classification_labels_with_a_trailing_dimension_are_refused():
    sx, sy, qx, qy = classification()
    learner = MAML(bn_net(out=2), inner_lr=0.05)
    with pytest.raises(TaskSpecError, match=r"squeeze\(-1\)"):
        learner.meta_backward((sx, sy[..., None], qx, qy[..., None]))


def test_inputs_of_another_dtype_than_the_network():
    learner = MAML(bn_net().double(), inner_lr=0.05, task="regression")
    with pytest.raises(TaskSpecError, match="float32.*float64"):
        learner.meta_backward(regression())


@pytest.mark.parametrize("batching", ["loop", "vmap", "threads"])
@pytest.mark.parametrize("call", ["meta_backward", "evaluate"])
def test_integer_inputs_into_a_linear_network_name_the_dtype_and_the_fix(batching, call):
    """Was torch's raw "expected m1 and m2 to have the same dtype" (fault injection, issue 17)."""
    sx, sy, qx, qy = regression()
    learner = MAML(bn_net(), inner_lr=0.05, task="regression", batching=batching,
                   first_order=batching == "vmap")  # second-order vmap over batch norm is refused (above)
    with pytest.raises(TaskSpecError) as info:
        getattr(learner, call)((sx.long(), sy, qx.long(), qy))
    text = str(info.value)
    assert "support_x has shape (4, 5, 2) and dtype torch.int64" in text and "Linear(in_features=2" in text
    assert "x.to(torch.float32)" in text and "nn.Embedding" in text
    assert isinstance(info.value.__cause__, RuntimeError)  # torch's own message stays chained


def test_a_feature_dimension_the_network_does_not_take_names_the_shapes_and_the_fix():
    """Was torch's raw "mat1 and mat2 shapes cannot be multiplied" (fault injection, issue 17)."""
    sx, sy, qx, qy = regression()
    learner = MAML(bn_net(), inner_lr=0.05, task="regression")
    with pytest.raises(TaskSpecError) as info:
        learner.meta_backward((sx[..., [0, 1, 1]], sy, qx[..., [0, 1, 1]], qy))
    text = str(info.value)
    assert "support_x has shape (4, 5, 3)" in text and "reach the first layer with 3 features but it takes 2" in text
    assert "nn.Linear(3, 16)" in text and "mat1 and mat2 shapes cannot be multiplied" in text  # torch's words too
    learner.meta_backward((sx, sy, qx, qy))  # inputs that fit run as before


def test_features_are_counted_where_they_reach_the_first_layer():
    """After a Flatten, the features that reach the first Linear (3 x 3 = 9) are named, not the last dimension."""
    sx, sy, qx, qy = classification()
    torch.manual_seed(0)
    learner = ProtoNet(nn.Sequential(nn.Flatten(), nn.Linear(4, 8)))
    images = sx[..., [0, 1, 0]][..., None].expand(3, 6, 3, 3)
    with pytest.raises(TaskSpecError, match=r"\(3, 6, 3, 3\).*reach the first layer with 9 features but it takes 4"):
        learner.meta_backward((images, sy, images, qy))
    learner.meta_backward((images[..., :2, :2], sy, images[..., :2, :2], qy))


def test_integer_ids_into_an_embedding_network_run_and_ids_out_of_range_are_named():
    class Bag(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed, self.head = nn.Embedding(10, 4), nn.Linear(4, 1)

        def forward(self, x):
            return self.head(self.embed(x).mean(-2))

    torch.manual_seed(0)
    learner = MAML(Bag(), inner_lr=0.05, task="regression")
    x, y = torch.randint(0, 10, (2, 5, 3)), torch.randn(2, 5, 1)
    assert torch.isfinite(torch.tensor(learner.meta_backward((x, y, x, y))["loss"]))  # legitimate integer inputs
    with pytest.raises(TaskSpecError, match=r"Embedding\(10, 4\).*integer ids below 10"):
        learner.meta_backward((x + 10, y, x + 10, y))


def test_an_error_of_the_learner_itself_is_not_blamed_on_the_inputs():
    """Only an error that the network also raises on the inputs by itself is explained; others propagate."""
    from autometa.learners._inputs import explain_model_error

    learner = MAML(bn_net(), inner_lr=0.05, task="regression")
    exc = RuntimeError("mat1 and mat2 shapes cannot be multiplied (5x7 and 2x16)")
    assert explain_model_error(learner, TaskBatch(*regression()), exc) is None  # the network runs on these
    sx, sy, qx, qy = regression()
    assert explain_model_error(learner, TaskBatch(sx.long(), sy, qx.long(), qy), RuntimeError("out of memory")) is None
    assert explain_model_error(learner, TaskBatch(sx.long(), sy, qx.long(), qy), exc) is not None


# ----------------------------------------------------------------------------- tuples and single tasks

@pytest.mark.parametrize("kind", ["regression", "classification"])
def test_a_plain_tuple_works_wherever_a_task_batch_does(kind):
    batch = regression() if kind == "regression" else classification()
    results = []
    for given in (TaskBatch(*batch), tuple(batch), list(batch)):
        learner = MAML(bn_net(out=1 if kind == "regression" else 2), inner_lr=0.05, task=kind)
        metrics = learner.meta_backward(given)
        results.append((metrics, grads(learner), learner.evaluate(given)["loss"]))
    for metrics, g, loss in results[1:]:
        assert metrics == results[0][0] and torch.equal(loss, results[0][2])
        assert all(torch.equal(g[k], results[0][1][k]) for k in g)


def test_a_plain_tuple_works_for_metric_learners():
    torch.manual_seed(0)
    learner = ProtoNet(nn.Sequential(nn.Linear(2, 8), nn.BatchNorm1d(8), nn.ReLU()))
    assert 0 <= learner.evaluate(classification())["accuracy"].mean() <= 1


@pytest.mark.parametrize("kind", ["regression", "classification"])
def test_one_task_without_the_task_dimension_is_a_clear_error(kind):
    batch = regression() if kind == "regression" else classification()
    one = tuple(t[0] for t in batch)
    learner = MAML(bn_net(out=1 if kind == "regression" else 2), inner_lr=0.05, task=kind)
    for call in (learner.meta_backward, learner.evaluate):
        with pytest.raises(TaskSpecError, match="task dimension"):
            call(one)
    learner.meta_backward(tuple(t[:1] for t in batch))  # one task, with its dimension, is fine


@pytest.mark.parametrize("bad, match", [
    ({"support_x": 1}, "TaskBatch or a tuple"),
    ("tasks", "TaskBatch or a tuple"),
    (lambda b: b[:3], "tuple of 3 items"),
    (lambda b: (b[0].numpy(), *b[1:]), "torch.as_tensor"),
    (lambda b: (b[0], b[1][:2], b[2], b[3]), "same number"),
    (lambda b: (b[0], b[1][:, :2], b[2], b[3]), "same number"),
    (lambda b: (b[0][:, :0], b[1][:, :0], b[2], b[3]), r"same number \(> 0\) of examples"),
])
def test_malformed_meta_batches(bad, match):
    batch = regression()
    given = bad(batch) if callable(bad) else bad
    with pytest.raises(AutometaError, match=match):
        MAML(bn_net(), inner_lr=0.05, task="regression").meta_backward(given)


# ----------------------------------------------------------------------------- README

def test_readme_section_runs():
    readme = ROOT / "README.md"
    text = readme.read_text() if readme.is_file() else ""
    if "## Your own model and tasks" not in text:
        text = (ROOT / "README_own_model.md").read_text()
    section = text.split("## Your own model and tasks", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "README: Your own model and tasks", "exec"), namespace)
    assert namespace["after"] < namespace["before"]
    net = namespace["net"]
    assert net[1].num_batches_tracked.item() == 0  # as the section says: buffers untouched


class _ThreadProbe(nn.Module):
    """Records torch's intra-op thread count during its forward passes."""

    def __init__(self, conv: bool):
        super().__init__()
        self.body = nn.Conv1d(1, 1, 1) if conv else nn.Identity()
        self.head = nn.Linear(1, 1)
        self.seen = set()

    def forward(self, x):
        self.seen.add(torch.get_num_threads())
        return self.head(self.body(x.transpose(-1, -2)).transpose(-1, -2) if isinstance(self.body, nn.Conv1d) else x)


@pytest.mark.parametrize("conv", [False, True])
def test_small_convolution_free_networks_run_on_one_thread_and_the_count_is_restored(conv):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(2, 6, 1, generator=g), torch.randn(2, 6, 1, generator=g)
    net = _ThreadProbe(conv)
    learner = MAML(net, inner_lr=0.1, task="regression", batching="loop")
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        learner.meta_backward((x[:, :3], y[:, :3], x[:, 3:], y[:, 3:]))
        learner.evaluate((x[:, :3], y[:, :3], x[:, 3:], y[:, 3:]))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert net.seen == ({2} if conv else {1})
