"""Meta-gradients and evaluations of every optimization-based learner, and ProtoNet, against
float64 references written here from scratch (``torch.autograd.grad(create_graph=True)`` on a
hand-written forward pass, or a closed form for iMAML).

Only the public API is used (constructor, ``meta_backward`` then ``.grad``, ``evaluate``), so
these tests hold across refactors of the learners' internals. Each test also checks that the
planted bug it guards against (``tests/test_mutations.py``) would move the answer by far more
than the tolerance, so a pass is never an accident of the fixture.
"""

import pytest
import torch

from autometa.learners import ANIL, FOMAML, MAML, MetaSGD, ProtoNet, Reptile, iMAML
from autometa.nets import MLP
from autometa.tasks import TaskBatch

RTOL, ATOL = 1e-9, 1e-12
TASKS, SUPPORT, QUERY, DIM = 3, 6, 7, 2


def regression_batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(TASKS, SUPPORT + QUERY, DIM, generator=g, dtype=torch.float64)
    w = torch.randn(TASKS, DIM, 1, generator=g, dtype=torch.float64)
    y = torch.sin(x @ w) + 0.1 * torch.randn(TASKS, SUPPORT + QUERY, 1, generator=g, dtype=torch.float64)
    return x[:, :SUPPORT], y[:, :SUPPORT], x[:, SUPPORT:], y[:, SUPPORT:]


def tiny_mlp(seed=0):
    torch.manual_seed(seed)
    return MLP(DIM, 1, (5,), activation="tanh").double()


def forward(p, x):
    """The tiny MLP, written out: tanh(x W1' + b1) W2' + b2."""
    h = torch.tanh(x @ p["features.0.weight"].T + p["features.0.bias"])
    return h @ p["head.weight"].T + p["head.bias"]


def mse(p, x, y):
    return ((forward(p, x) - y) ** 2).mean()


def sgd(p, x, y, steps, lr, names=None, first_order=False):
    """``steps`` of plain gradient descent; ``lr`` a float or a dict of per-parameter tensors."""
    for _ in range(steps):
        keys = [k for k in p if names is None or k in names]
        grads = torch.autograd.grad(mse(p, x, y), [p[k] for k in keys], create_graph=not first_order)
        p = dict(p)
        for k, g in zip(keys, grads):
            p[k] = p[k] - (lr[k] if isinstance(lr, dict) else lr) * g
    return p


def leaves(learner, prefix="model."):
    return {n[len(prefix):]: p.detach().clone().requires_grad_(True)
            for n, p in learner.named_parameters() if n.startswith(prefix)}


def learner_grads(learner, prefix="model."):
    return {n[len(prefix):]: p.grad for n, p in learner.named_parameters() if n.startswith(prefix)}


def reference_grads(adapt, init, batch, extra=None):
    """d/d(init, extra) of the mean query loss after ``adapt(init, support_x, support_y)``."""
    sx, sy, qx, qy = batch
    loss = sum(mse(adapt(init, sx[i], sy[i]), qx[i], qy[i]) for i in range(TASKS)) / TASKS
    wrt = {**init, **(extra or {})}
    return dict(zip(wrt, torch.autograd.grad(loss, list(wrt.values()))))


def assert_close(got, want):
    assert got.keys() == want.keys()
    for k in want:
        assert got[k] is not None, f"{k}: no meta-gradient"
        torch.testing.assert_close(got[k], want[k], rtol=RTOL, atol=ATOL, msg=lambda m, k=k: f"{k}: {m}")


def assert_far(a, b, what):
    """The planted bug moves the reference far beyond the tolerance (the test has teeth)."""
    gap = max((a[k] - b[k]).abs().max().item() for k in a)
    scale = max(b[k].abs().max().item() for k in b)
    assert gap > 1e-3 * scale > 0, f"fixture too weak to see {what}"


@pytest.mark.parametrize("batching", ["loop", "vmap", "threads"])
def test_maml_second_order_two_steps(batching):
    learner = MAML(tiny_mlp(), inner_lr=0.3, inner_steps=2, task="regression", batching=batching)
    batch = regression_batch()
    init = leaves(learner)
    want = reference_grads(lambda p, x, y: sgd(p, x, y, 2, 0.3), init, batch)
    learner.meta_backward(TaskBatch(*batch))
    assert_close(learner_grads(learner), want)
    first_order = reference_grads(lambda p, x, y: sgd(p, x, y, 2, 0.3, first_order=True), init, batch)
    assert_far(want, first_order, "a first-order inner loop")


def test_fomaml_is_the_first_order_gradient():
    learner = FOMAML(tiny_mlp(), inner_lr=0.3, inner_steps=2, task="regression")
    batch = regression_batch()
    init = leaves(learner)
    want = reference_grads(lambda p, x, y: sgd(p, x, y, 2, 0.3, first_order=True), init, batch)
    learner.meta_backward(TaskBatch(*batch))
    assert_close(learner_grads(learner), want)


def test_anil_is_second_order_through_the_head_only():
    learner = ANIL(tiny_mlp(), inner_lr=0.3, inner_steps=2, task="regression")
    batch = regression_batch()
    init = leaves(learner)
    head = {"head.weight", "head.bias"}
    want = reference_grads(lambda p, x, y: sgd(p, x, y, 2, 0.3, names=head), init, batch)
    learner.meta_backward(TaskBatch(*batch))
    assert_close(learner_grads(learner), want)
    body = ["features.0.weight", "features.0.bias"]
    assert all(want[k].abs().max() > 1e-3 for k in body), "the body's meta-gradient must be nonzero"
    first_order = reference_grads(lambda p, x, y: sgd(p, x, y, 2, 0.3, names=head, first_order=True),
                                  init, batch)
    assert_far({k: want[k] for k in body}, {k: first_order[k] for k in body}, "a first-order ANIL")
    everything = reference_grads(lambda p, x, y: sgd(p, x, y, 2, 0.3), init, batch)
    assert_far(want, everything, "ANIL adapting the body too")


def metasgd_with_distinct_rates():
    learner = MetaSGD(tiny_mlp(), inner_lr=0.2, inner_steps=2, task="regression")
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():  # per-coordinate rates that differ from inner_lr and from each other
        for p in learner.optimizer.lrs.parameters():
            p.copy_(0.05 + 0.25 * torch.rand(p.shape, generator=g, dtype=p.dtype))
    rates = {n.replace("__", "."): p.detach().clone().requires_grad_(True)
             for n, p in learner.optimizer.lrs.named_parameters()}
    return learner, rates


def test_metasgd_meta_gradient_of_init_and_rates():
    learner, rates = metasgd_with_distinct_rates()
    batch = regression_batch()
    init = leaves(learner)
    want = reference_grads(lambda p, x, y: sgd(p, x, y, 2, rates), init, batch, extra=rates)
    learner.meta_backward(TaskBatch(*batch))
    got = learner_grads(learner)
    got.update({n.replace("__", "."): p.grad for n, p in learner.optimizer.lrs.named_parameters()})
    assert_close(got, want)
    doubled = {k: 2 * v for k, v in rates.items()}
    twice = reference_grads(lambda p, x, y: sgd(p, x, y, 2, doubled), init, batch, extra=rates)
    assert_far(want, twice, "rates used twice")


def test_metasgd_evaluates_with_its_learned_rates():
    learner, rates = metasgd_with_distinct_rates()
    sx, sy, qx, qy = batch = regression_batch(1)
    init = leaves(learner)
    want = torch.stack([mse(sgd(init, sx[i], sy[i], 2, rates), qx[i], qy[i]) for i in range(TASKS)]).detach()
    got = learner.evaluate(TaskBatch(*batch))["loss"]
    torch.testing.assert_close(got, want, rtol=RTOL, atol=ATOL)
    plain = torch.stack([mse(sgd(init, sx[i], sy[i], 2, 0.2), qx[i], qy[i]) for i in range(TASKS)]).detach()
    assert (plain - want).abs().max() > 1e-3 * want.abs().max()


def test_reptile_meta_gradient_is_init_minus_adapted():
    learner = Reptile(tiny_mlp(), inner_lr=0.1, inner_steps=3, task="regression")
    sx, sy, _, _ = batch = regression_batch()
    init = leaves(learner)
    adapted = [sgd(init, sx[i], sy[i], 3, 0.1, first_order=True) for i in range(TASKS)]
    want = {k: sum(init[k] - a[k] for a in adapted).detach() / TASKS for k in init}
    learner.meta_backward(TaskBatch(*batch))
    assert_close(learner_grads(learner), want)
    assert all(v.abs().max() > 1e-3 for v in want.values())


def ridge_meta_gradient(init, batch, reg):
    """iMAML's meta-gradient in closed form for a linear model with squared loss.

    Inner problem per task: ``min_t (1/n)||X t - y||^2 + reg/2 ||t - w||^2`` with ``X`` the inputs
    with a column of ones (``t`` = weight and bias). Its solution is
    ``t* = (H + reg I)^{-1} ((2/n) X'y + reg w)`` with ``H = (2/n) X'X``, so
    ``d t*/d w = reg (H + reg I)^{-1}`` and the meta-gradient is ``reg (H + reg I)^{-1} grad L_query(t*)``.
    """
    sx, sy, qx, qy = batch
    w = torch.cat([init["weight"].flatten(), init["bias"]]).detach()
    eye = torch.eye(len(w), dtype=w.dtype)
    total = torch.zeros_like(w)
    for i in range(TASKS):
        xs = torch.cat([sx[i], torch.ones(len(sx[i]), 1, dtype=w.dtype)], 1)
        xq = torch.cat([qx[i], torch.ones(len(qx[i]), 1, dtype=w.dtype)], 1)
        system = 2 / len(xs) * xs.T @ xs + reg * eye
        solution = torch.linalg.solve(system, 2 / len(xs) * xs.T @ sy[i].flatten() + reg * w)
        query_grad = 2 / len(xq) * xq.T @ (xq @ solution - qy[i].flatten())
        total += reg * torch.linalg.solve(system, query_grad)
    total /= TASKS
    return {"weight": total[:-1].view_as(init["weight"]), "bias": total[-1:]}


def test_imaml_equals_the_closed_form_on_a_linear_model():
    torch.manual_seed(0)
    model = torch.nn.Linear(DIM, 1).double()
    # 400 inner steps of size 0.1 solve the strongly convex inner problem to machine precision;
    # 5 conjugate-gradient steps are exact for its 3 unknowns
    learner = iMAML(model, inner_lr=0.1, inner_steps=400, reg=2.0, cg_steps=5, task="regression")
    batch = regression_batch()
    want = ridge_meta_gradient(leaves(learner), batch, reg=2.0)
    learner.meta_backward(TaskBatch(*batch))
    got = learner_grads(learner)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-7, atol=1e-10)
    assert all(v.abs().max() > 1e-3 for v in want.values())


def test_eval_inner_steps_are_used_by_evaluate():
    learner = MAML(tiny_mlp(), inner_lr=0.1, inner_steps=1, eval_inner_steps=5, task="regression")
    sx, sy, qx, qy = batch = regression_batch(2)
    init = leaves(learner)

    def losses(steps):
        return torch.stack([mse(sgd(init, sx[i], sy[i], steps, 0.1), qx[i], qy[i])
                            for i in range(TASKS)]).detach()

    got = learner.evaluate(TaskBatch(*batch))["loss"]
    torch.testing.assert_close(got, losses(5), rtol=RTOL, atol=ATOL)
    assert (losses(1) - losses(5)).abs().min() > 1e-4, "fixture too weak to tell 1 step from 5"


def test_protonet_meta_gradient_uses_squared_euclidean_distance():
    torch.manual_seed(0)
    learner = ProtoNet(MLP(DIM, None, (4,), activation="tanh").double())
    g = torch.Generator().manual_seed(4)
    ways, shots, queries = 3, 2, 2
    support_y = torch.arange(ways).repeat_interleave(shots).repeat(TASKS, 1)
    query_y = torch.arange(ways).repeat_interleave(queries).repeat(TASKS, 1)
    support_x = torch.randn(TASKS, ways * shots, DIM, generator=g, dtype=torch.float64)
    query_x = torch.randn(TASKS, ways * queries, DIM, generator=g, dtype=torch.float64)
    init = leaves(learner)

    def loss(squared=True):
        total = 0
        for i in range(TASKS):
            embed = lambda x: torch.tanh(x @ init["features.0.weight"].T + init["features.0.bias"])
            prototypes = embed(support_x[i]).view(ways, shots, -1).mean(1)
            distance = ((embed(query_x[i])[:, None] - prototypes[None]) ** 2).sum(-1)
            logits = -(distance if squared else distance.sqrt())
            total = total + torch.nn.functional.cross_entropy(logits, query_y[i])
        return total / TASKS

    want = dict(zip(init, torch.autograd.grad(loss(), list(init.values()))))
    learner.meta_backward(TaskBatch(support_x, support_y, query_x, query_y))
    assert_close(learner_grads(learner), want)
    wrong = dict(zip(init, torch.autograd.grad(loss(squared=False), list(init.values()))))
    assert_far(want, wrong, "an unsquared distance")
