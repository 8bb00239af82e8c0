"""The data slot: every filler passes check_filler; DC's distance and DD's unrolled gradient against float64
references; DSA's siamese draws; the evaluator; saved sets load as datasets and run under `autometa run`."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from autometa.data import load_dataset
from autometa.errors import ConfigError, UnsupportedFeatureError
from autometa.slots import FILLERS, SLOTS, build_filler
from autometa.slots.data import (
    DC,
    DC_LOOPS,
    DD,
    DM,
    DSA,
    MTT,
    EvalProtocol,
    Forgetting,
    Herding,
    KCenter,
    RandomReal,
    build_convnet,
    dc_augment,
    dsa,
    evaluate_support,
    gradient_match_distance,
    mean_embedding_distances,
    save_grid,
    save_support,
    strategy_for,
    train_on_support,
    unrolled_real_loss,
)
from autometa.testing import check_filler

TINY = {"width": 4, "depth": 1}
FACTORIES = {
    "random_real": lambda: RandomReal(ipc=2, seed=1),
    "herding": lambda: Herding(ipc=2, pool=6, feature_epochs=1, net=TINY),
    "k_center": lambda: KCenter(ipc=2, pool=6, features="pixels"),
    "forgetting": lambda: Forgetting(ipc=2, pool=6, epochs=2, net=TINY),
    "dd": lambda: DD(ipc=1, iterations=2, steps=2, epochs=1, batch_real=8, net=TINY),
    "dc": lambda: DC(ipc=2, iterations=2, outer_loop=2, inner_loop=1, batch_real=4, net=TINY),
    "dsa": lambda: DSA(ipc=1, iterations=2, batch_real=4, net=TINY),
    "dm": lambda: DM(ipc=2, iterations=2, batch_real=4, net=TINY),
    "mtt": lambda: MTT(ipc=1, iterations=2, experts=1, expert_epochs=1, max_start_epoch=1, syn_steps=2,
                       batch_real=6, net=TINY),
}


def tiny_set(seed=0, n=8, classes=3, size=8):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(classes).repeat_interleave(n)
    return torch.randn(len(y), 1, size, size, generator=g) + y.view(-1, 1, 1, 1).float(), y


def test_slot_is_registered_with_every_filler():
    assert "data" in SLOTS
    assert set(FACTORIES) == set(FILLERS["data"]), "every data filler needs a check_filler case in FACTORIES"


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_check_filler(name):
    check_filler(FACTORIES[name], backends=())


def test_check_filler_catches_a_support_that_ignores_meta():
    class Blind(DM):
        def support(self, meta=None):
            return super().support(None)  # its own images: an estimator's ω never reaches the set

    with pytest.raises(AssertionError, match="does not reach images"):
        check_filler(lambda: Blind(ipc=2, iterations=2, batch_real=4, net=TINY), backends=())


def test_learned_fillers_expose_images_and_step_sizes_as_meta_params():
    x, y = tiny_set()
    assert set(DD(ipc=1, iterations=1, steps=2, epochs=1, batch_real=4, net=TINY).fit(x, y).meta_params()) == \
        {"images", "lrs"}
    assert set(DM(ipc=1, iterations=1, batch_real=4, net=TINY).fit(x, y).meta_params()) == {"images"}
    assert RandomReal(ipc=1).fit(x, y).meta_params() == {}


def test_support_before_fit_and_bad_inputs_are_clear_errors():
    with pytest.raises(UnsupportedFeatureError, match="call fit"):
        DC(ipc=1).support()
    x, y = tiny_set(n=2)
    with pytest.raises(ConfigError, match="ipc=3 images per class but class"):
        RandomReal(ipc=3).fit(x, y)
    with pytest.raises(ConfigError, match="published loop counts for ipc in"):
        DC(ipc=7)
    with pytest.raises(ConfigError, match="unknown operation"):
        DM(augment="color_blur")
    with pytest.raises(ConfigError, match="Unknown data filler 'dcc'"):
        build_filler("data", {"name": "dcc"})


def test_published_dc_loops():
    assert DC_LOOPS[1] == (1, 1) and DC_LOOPS[10] == (10, 50) and DC_LOOPS[50] == (50, 10)
    assert DC(ipc=10).loops() == (10, 50)
    assert DC(ipc=10, outer_loop=2, inner_loop=0).loops() == (2, 0)


# --- DC's matching distance against a float64 loop over output channels ----------------------------

def naive_distance(grads_syn, grads_real):
    total = 0.0
    for gs, gr in zip(grads_syn, grads_real):
        if gs.ndim == 1:
            continue  # the reference code returns 0 for bias and normalisation vectors
        a, b = gs.double().reshape(gs.shape[0], -1), gr.double().reshape(gr.shape[0], -1)
        for i in range(a.shape[0]):
            dot = sum(float(u) * float(v) for u, v in zip(a[i], b[i]))
            norms = math.sqrt(sum(float(u) ** 2 for u in a[i])) * math.sqrt(sum(float(v) ** 2 for v in b[i]))
            total += 1 - dot / (norms + 1e-6)
    return total


def test_gradient_match_distance_equals_a_per_channel_loop_in_float64():
    g = torch.Generator().manual_seed(0)
    shapes = [(4, 2, 3, 3), (4,), (5, 6), (6,), (3, 2, 4)]
    syn = [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]
    real = [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]
    ours = gradient_match_distance(syn, real).item()
    assert ours == pytest.approx(naive_distance(syn, real), rel=1e-12)
    # a per-output-channel distance: scaling one output channel of the real gradient changes nothing (up to
    # the 1e-6 in the denominator), where one cosine over the whole tensor would change
    scaled = [r.clone() for r in real]
    scaled[0][1] *= 7.0
    assert gradient_match_distance(syn, scaled).item() == pytest.approx(ours, rel=1e-8)
    whole = lambda a, b: 1 - (a * b).sum() / (a.norm() * b.norm())
    assert whole(syn[0], scaled[0]).item() != pytest.approx(whole(syn[0], real[0]).item(), rel=1e-3)
    assert gradient_match_distance(real, real).item() == pytest.approx(0.0, abs=1e-4)


def test_dc_matches_gradients_of_the_same_network_on_real_and_synthetic_images():
    """The synthetic images' gradient flows through the second-order graph: one DC step lowers the distance."""
    x, y = tiny_set(n=10)
    filler = DC(ipc=1, iterations=0, batch_real=10, net=TINY, init="noise").fit(x, y)
    net = build_convnet(x.shape[1:], 3, TINY, seed=5)
    params = [p for p in net.parameters() if p.ndim >= 2]

    def distance():
        total = 0.0
        for c in range(3):
            gr = torch.autograd.grad(F.cross_entropy(net(x[y == c]), y[y == c]), params)
            gs = torch.autograd.grad(F.cross_entropy(net(filler.images[c:c + 1]), y[y == c][:1]), params,
                                     create_graph=True)
            total = total + gradient_match_distance(gs, [t.detach() for t in gr])
        return total

    before = distance()
    before.backward()
    with torch.no_grad():
        filler.images -= 0.05 * filler.images.grad
    assert distance().item() < before.item()


# --- DD's unrolled gradient against finite differences in float64 ---------------------------------

def test_dd_unrolled_gradient_equals_finite_differences_in_float64():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3), torch.nn.Tanh(), torch.nn.Flatten(),
                              torch.nn.Linear(3 * 6 * 6, 3)).double()
    params = {k: v.detach().requires_grad_(True) for k, v in net.named_parameters()}
    x_real, y_real = tiny_set(seed=1)
    x_real = x_real.double()
    x_syn = torch.randn(3, 1, 8, 8, dtype=torch.float64, requires_grad=True)
    y_syn = torch.arange(3)
    lrs = torch.tensor([0.3, 0.2, 0.1], dtype=torch.float64, requires_grad=True)
    loss = unrolled_real_loss(net, params, x_syn, y_syn, lrs, x_real, y_real)
    grad_x, grad_lrs = torch.autograd.grad(loss, [x_syn, lrs])

    def value(xs, ls):
        return unrolled_real_loss(net, params, xs, y_syn, ls, x_real, y_real).item()

    eps = 1e-6
    for i in [(0, 0, 3, 4), (2, 0, 0, 7), (1, 0, 5, 5)]:
        plus, minus = x_syn.detach().clone(), x_syn.detach().clone()
        plus[i] += eps
        minus[i] -= eps
        fd = (value(plus.requires_grad_(), lrs) - value(minus.requires_grad_(), lrs)) / (2 * eps)
        assert grad_x[i].item() == pytest.approx(fd, rel=1e-5, abs=1e-9)
    for k in range(3):
        plus, minus = lrs.detach().clone(), lrs.detach().clone()
        plus[k] += eps
        minus[k] -= eps
        fd = (value(x_syn, plus) - value(x_syn, minus)) / (2 * eps)
        assert grad_lrs[k].item() == pytest.approx(fd, rel=1e-5, abs=1e-9)
    # the naive reference: the same steps written out with plain autograd, no functional_call
    w = {k: v for k, v in params.items()}
    for lr in lrs:
        h = torch.tanh(F.conv2d(x_syn, w["0.weight"], w["0.bias"])).flatten(1)
        step_loss = F.cross_entropy(F.linear(h, w["3.weight"], w["3.bias"]), y_syn)
        grads = torch.autograd.grad(step_loss, list(w.values()), create_graph=True)
        w = {k: v - lr * gk for (k, v), gk in zip(w.items(), grads)}
    h = torch.tanh(F.conv2d(x_real, w["0.weight"], w["0.bias"])).flatten(1)
    naive = F.cross_entropy(F.linear(h, w["3.weight"], w["3.bias"]), y_real)
    assert naive.item() == pytest.approx(loss.item(), rel=1e-12)
    naive_x, naive_lrs = torch.autograd.grad(naive, [x_syn, lrs])
    torch.testing.assert_close(naive_x, grad_x, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(naive_lrs, grad_lrs, rtol=1e-10, atol=1e-12)


def test_dd_lowers_its_objective_and_learns_step_sizes():
    x, y = tiny_set(n=10)
    filler = DD(ipc=1, iterations=15, steps=2, epochs=1, batch_real=30, lr_images=0.05, net=TINY).fit(x, y)
    losses = [h["loss"] for h in filler.history]
    assert np.mean(losses[-3:]) < np.mean(losses[:3])
    assert not torch.allclose(filler.lrs.detach(), torch.full((2,), 0.02))


def test_dm_lowers_the_embedding_gap():
    x, y = tiny_set(n=20)

    def gap(images):  # DM's objective averaged over 10 fixed networks it never trained on
        total = 0.0
        for seed in range(100, 110):
            net = build_convnet(x.shape[1:], 3, TINY, seed=seed)
            with torch.no_grad():
                total += sum((net.embed(x[y == c]).mean(0) - net.embed(images[c:c + 1]).mean(0)).pow(2).sum()
                             for c in range(3))
        return float(total)

    start = DM(ipc=1, iterations=0, net=TINY).fit(x, y).images.detach()
    trained = DM(ipc=1, iterations=40, batch_real=20, lr_images=1.0, augment=None, net=TINY).fit(x, y)
    assert gap(trained.images.detach()) < 0.5 * gap(start)


def test_dm_batched_loss_equals_the_reference_class_by_class_loop():
    g = torch.Generator().manual_seed(3)
    net = build_convnet((1, 8, 8), 3, TINY, seed=1).double()
    reals = [torch.randn(n, 1, 8, 8, generator=g, dtype=torch.float64) for n in (5, 7, 4)]
    syns = [torch.randn(2, 1, 8, 8, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    batched = mean_embedding_distances(net, reals, syns)
    loop = torch.stack([(net.embed(r).mean(0).detach() - net.embed(s).mean(0)).pow(2).sum()
                        for r, s in zip(reals, syns)])  # main_DM.py's loop
    torch.testing.assert_close(batched, loop, rtol=1e-12, atol=1e-12)
    grads = torch.autograd.grad(batched.sum(), syns)
    reference = torch.autograd.grad(loop.sum(), syns)
    for a, b in zip(grads, reference):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


# --- DSA: one shared draw for real and synthetic batches --------------------------------------------

@pytest.mark.parametrize("op", ["color", "crop", "cutout", "flip", "scale", "rotate"])
def test_dsa_same_seed_same_transformation_for_batches_of_any_size(op):
    g = torch.Generator().manual_seed(0)
    image = torch.rand(1, 1, 12, 12, generator=g)
    real = torch.cat([image, torch.rand(255, 1, 12, 12, generator=g)])
    syn = image.clone().requires_grad_(True)
    for seed in range(6):
        a, b = dsa(real, op, seed), dsa(syn, op, seed)
        torch.testing.assert_close(a[:1], b.detach())
        # shared: every image of the batch gets the same transformation
        torch.testing.assert_close(dsa(image.expand(3, -1, -1, -1), op, seed), a[:1].expand(3, -1, -1, -1))
    b.sum().backward()
    assert syn.grad is not None and torch.isfinite(syn.grad).all()


def test_dsa_operations_do_what_they_say():
    x = torch.zeros(1, 1, 8, 8)
    x[0, 0, 4, 4] = 1.0
    moved = [dsa(x, "crop", s) for s in range(20)]
    assert all(m.sum() <= 1.0 and m.max() in (0.0, 1.0) for m in moved)  # whole-pixel shifts, zero fill
    assert any(not torch.equal(m, x) for m in moved)
    assert all(torch.equal(dsa(x, "flip", s), x) or torch.equal(dsa(x, "flip", s), x.flip(3)) for s in range(10))
    holes = []
    for s in range(30):  # a square of half the side, clipped at the border
        zero = dsa(torch.ones(1, 1, 8, 8), "cutout", s)[0, 0] == 0
        rows, cols = zero.any(1).nonzero().view(-1), zero.any(0).nonzero().view(-1)
        assert zero.sum() == len(rows) * len(cols) and len(rows) <= 4 and len(cols) <= 4
        holes.append(int(zero.sum()))
    assert max(holes) == 16 and min(holes) < 16
    assert strategy_for("mnist") == "color_crop_cutout_scale_rotate"
    assert "flip" in strategy_for("fashion_mnist")
    per_image = dsa(torch.rand(64, 1, 8, 8), "color", 1, shared=False)
    assert per_image.mean(dim=(1, 2, 3)).std() > 0


# --- the DC reference's evaluation augmentation (crop / scale / rotate / noise, one per image) -------

def test_dc_crop_and_scale_equal_the_reference_per_image_code():
    from autometa.slots.data._augment import dc_crop, dc_scale

    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 2, 28, 28, generator=g, dtype=torch.float64)
    mean = [float(x[:, c].mean()) for c in range(2)]
    r, q = torch.tensor([0, 7, 3, 4, 1, 6]), torch.tensor([5, 0, 7, 2, 4, 3])
    cropped = dc_crop(x, r, q, 4, torch.tensor(mean, dtype=x.dtype))
    heights, widths = torch.tensor([22, 33, 28, 25, 30, 23]), torch.tensor([30, 24, 28, 33, 22, 26])
    scaled = dc_scale(x, heights, widths)
    for i in range(6):  # utils.augment's cropfun and scalefun, transcribed
        padded = torch.stack([torch.full((36, 36), m, dtype=x.dtype) for m in mean])
        padded[:, 4:32, 4:32] = x[i]
        assert torch.equal(cropped[i], padded[:, r[i]:r[i] + 28, q[i]:q[i] + 28])
        h, w = int(heights[i]), int(widths[i])
        tmp = F.interpolate(x[i:i + 1], [h, w])[0]
        side = max(h, w, 28)
        canvas = torch.zeros(2, side, side, dtype=x.dtype)
        top, left, centre = (side - h) // 2, (side - w) // 2, (side - 28) // 2
        canvas[:, top:top + h, left:left + w] = tmp
        assert torch.equal(scaled[i], canvas[:, centre:centre + 28, centre:centre + 28])


def test_dc_augment_applies_one_operation_per_image_and_is_seeded():
    x = torch.rand(64, 1, 12, 12)
    a, b = dc_augment(x, "crop_scale_rotate", seed=4), dc_augment(x, "crop_scale_rotate", seed=4)
    assert torch.equal(a, b) and not torch.equal(a, dc_augment(x, "crop_scale_rotate", seed=5))
    noisy = dc_augment(x, "noise", seed=1)
    assert 0 < (noisy - x).abs().max() < 0.01  # 0.001 N(0, 1)
    one_pixel = torch.zeros(32, 1, 12, 12)
    one_pixel[:, 0, 6, 6] = 1.0
    shifted = dc_augment(one_pixel, "crop", seed=2)  # whole-pixel shifts, filled with the batch mean
    fill = one_pixel.mean()
    assert all(int((s == 1.0).sum()) <= 1 and bool(((s == 1.0) | (s == 0.0) | (s == fill)).all()) for s in shifted)
    with pytest.raises(ConfigError, match="crop_scale_rotate"):
        EvalProtocol(augment="color", augment_mode="dc")
    with pytest.raises(ConfigError, match="augment_mode"):
        EvalProtocol(augment_mode="autoaugment")


# --- the evaluator ---------------------------------------------------------------------------------

def test_evaluator_learns_a_separable_set_and_decays_the_lr_at_half():
    def patterns(seed, n):  # class c: a bright bar in row band c, plus noise (instance norm removes offsets)
        g = torch.Generator().manual_seed(seed)
        y = torch.arange(3).repeat_interleave(n)
        x = 0.3 * torch.randn(len(y), 1, 12, 12, generator=g)
        for i, c in enumerate(y.tolist()):
            x[i, 0, 4 * c:4 * c + 4] += 1.0
        return x, y

    x, y = patterns(0, 4)
    x_test, y_test = patterns(9, 30)
    protocol = EvalProtocol(epochs=20, net=(("width", 8), ("depth", 2)))
    result = evaluate_support(x, y, x_test, y_test, protocol, seeds=(0, 1))
    assert result["mean"] > 0.9 and len(result["accuracies"]) == 2
    assert evaluate_support(x, y, x_test, y_test, protocol, seeds=(0,))["accuracies"] == result["accuracies"][:1]
    seen = []
    original = torch.optim.SGD.step

    def spy(self, *args, **kwargs):
        seen.append(self.param_groups[0]["lr"])
        return original(self, *args, **kwargs)

    torch.optim.SGD.step = spy
    try:
        train_on_support(x, y, 3, EvalProtocol(epochs=10, net=(("width", 4), ("depth", 1))), seed=0)
    finally:
        torch.optim.SGD.step = original
    assert seen == [0.01] * 6 + [pytest.approx(0.001)] * 4  # the reference's lr_schedule = [epochs // 2 + 1]
    with pytest.raises(ConfigError, match="epochs"):
        EvalProtocol(epochs=0)


def test_convnet3_has_the_reference_shape():
    net = build_convnet((1, 28, 28), 10)
    assert net.classifier.in_features == 128 * 4 * 4  # 28x28 padded by 3 -> 32 -> 16 -> 8 -> 4
    assert sum(isinstance(m, torch.nn.GroupNorm) and m.num_groups == 128 for m in net.modules()) == 3
    assert sum(isinstance(m, torch.nn.AvgPool2d) for m in net.modules()) == 3


# --- saved sets: npz readable as a dataset, PNG grid, and `autometa run` on one ----------------------

def test_saved_set_loads_as_a_dataset_and_draws_a_grid(tmp_path):
    x, y = tiny_set(n=4)
    filler = RandomReal(ipc=2).fit(x, y)
    xs, ys = filler.support()
    path = save_support(tmp_path / "set.npz", xs, ys, mean=0.5, std=2.0, class_names=["a", "b", "c"], method="r")
    data = load_dataset(str(path))
    np.testing.assert_allclose(data.x, (xs * 2.0 + 0.5).numpy(), rtol=1e-6)
    assert data.y.tolist() == ys.tolist() and data.class_names == ["a", "b", "c"]
    with pytest.raises(Exception, match="x_test"):
        load_dataset(str(path), train=False)
    assert save_grid(tmp_path / "set.png", xs, ys, 0.5, 2.0).stat().st_size > 0


def test_autometa_run_trains_on_a_saved_set(tmp_path):
    from autometa.experiment import run_experiment

    x, y = tiny_set(n=12, classes=5)
    xs, ys = RandomReal(ipc=10).fit(x, y).support()
    path = save_support(tmp_path / "distilled.npz", xs, ys)
    config = {"tasks": {"name": "supervised", "dataset": str(path), "ways": 5, "train_size": 5, "test_size": 5},
              "model": {"name": "mlp", "hidden": [16]},
              "learner": {"name": "maml", "inner_steps": 2, "reinit": True, "inner_lr": 0.5},
              "outer": {"optimizer": "adam", "lr": 0.001, "meta_batch": 2, "steps": 2},
              "run": {"validate_every": 0, "test_tasks": 4, "eval_batch": 4, "checkpoint_every": 0, "threads": 1}}
    results = run_experiment(config, tmp_path / "run")
    assert 0.0 <= results["test"]["accuracy"]["mean"] <= 1.0


def test_a_time_budget_stops_distillation_after_the_iteration_it_runs_out_in():
    x, y = tiny_set()
    full = DM(ipc=1, iterations=5, batch_real=4, net=TINY).fit(x, y)
    assert len(full.history) == 5 and not full.budget_stop
    cut = DM(ipc=1, iterations=5, batch_real=4, net=TINY, time_budget_s=1e-9).fit(x, y)
    assert len(cut.history) == 1 and cut.budget_stop  # at least one iteration, then the budget
    torch.testing.assert_close(cut.history[0]["loss"], full.history[0]["loss"])
    with pytest.raises(ConfigError, match="time_budget_s"):
        DC(ipc=1, time_budget_s=0)


def test_augmentations_training_and_matching_make_every_tensor_on_the_input_device():
    # on the meta device every op runs without data; a tensor made on the CPU (a mask, a label, a step
    # size without device=) would meet the meta tensors and raise, as it would meet CUDA ones on a GPU
    x, y = torch.empty(12, 1, 8, 8, device="meta"), torch.zeros(12, dtype=torch.long, device="meta")
    for op in ("color", "crop", "cutout", "flip", "scale", "rotate"):
        assert dsa(x, op, 1).is_meta and dsa(x, op, 1, shared=False).is_meta
    for op in ("crop", "scale", "rotate", "noise"):
        assert dc_augment(x, op, 2).is_meta
    net = build_convnet((1, 8, 8), 3, TINY, seed=0, device="meta")
    assert mean_embedding_distances(net, [x[:4], x[4:]], [x[:1], x[1:2]]).is_meta
    params = {k: v.detach().requires_grad_(True) for k, v in net.named_parameters()}
    assert unrolled_real_loss(net, params, x[:3], y[:3], torch.full((2,), 0.1, device="meta"), x, y).is_meta
    protocol = EvalProtocol(epochs=2, augment="crop_scale_rotate", augment_mode="dc", net=tuple(TINY.items()))
    assert train_on_support(x, y, 3, protocol, seed=0).classifier.weight.is_meta


def test_a_distiller_starts_from_given_images_and_fits_on_from_them():
    x, y = tiny_set()
    first = DM(ipc=2, iterations=3, batch_real=4, net=TINY).fit(x, y)
    start = first.images.detach().clone()
    # no iteration: the start itself
    held = DC(ipc=2, iterations=0, outer_loop=1, inner_loop=1, init=start, net=TINY).fit(x, y)
    torch.testing.assert_close(held.support()[0], start, rtol=0, atol=0)
    assert held.support()[0].data_ptr() != start.data_ptr()  # a copy: fitting on never writes to the caller's
    on = DM(ipc=2, iterations=2, batch_real=4, net=TINY, init=start).fit(x, y)
    assert not torch.equal(on.images, start) and torch.equal(start, first.images.detach())
    with pytest.raises(ConfigError, match=r"ipc=|per class of 3 classes"):
        DM(ipc=3, iterations=1, init=start, net=TINY).fit(x, y)
    with pytest.raises(ConfigError, match="must be one of"):
        DM(ipc=2, init="zeros")
    with pytest.raises(ConfigError, match="float tensor"):
        DM(ipc=2, init=torch.zeros(6, 8, 8))


def test_forgetting_keeps_each_class_s_most_forgotten_pool_images_and_reports_the_counts():
    x, y = tiny_set(n=8)
    filler = Forgetting(ipc=2, pool=6, epochs=3, net=TINY).fit(x, y)
    y_pool, score = y[filler.pool_index], filler.forgetting_score
    assert len(filler.pool_index) == len(filler.forgetting_events) == 18 and len(set(filler.pool_index.tolist())) == 18
    learned = torch.isfinite(score)
    assert ((score - filler.forgetting_events)[learned].abs() < 1e-2).all()  # the count plus a tie-breaking jitter
    kept = torch.cat([members[score[members].argsort(descending=True)[:2]]
                      for members in (torch.nonzero(y_pool == c).view(-1) for c in range(3))])
    assert torch.equal(filler.support()[0], x[filler.pool_index[kept]])
