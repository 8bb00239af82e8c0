"""The augmentation slot: operations (identity at 0, float64 gradients, PIL agreement, vmap), the
hand-crafted and learned policies (check_filler, determinism), RELAX, the DADA search, support-set
augmentation in MAML and ProtoNet, and a smoke run of the study."""

import numpy as np
import pytest
import torch

from autometa.errors import ConfigError
from autometa.learners import MAML, ProtoNet
from autometa.nets import Conv4
from autometa.slots import build_filler
from autometa.slots.augmentation import (
    AUTOAUGMENT_POLICIES,
    DADA,
    EXACT_MAGNITUDE,
    GREY_OPS,
    NO_MAGNITUDE,
    OPS,
    AutoAugment,
    ControlVariate,
    Cutout,
    NoAugmentation,
    RandAugment,
    RandomCrop,
    TrivialAugment,
    UntrainedDADA,
    conditional_gumbel,
    dada_search,
    relax_surrogate,
    unrolled_problem,
)
from autometa.testing import check_filler

MAGNITUDE_OPS = sorted(set(OPS) - NO_MAGNITUDE)


def _images(n=4, size=12, seed=0, dtype=torch.float64, low=0.0, high=1.0):
    g = torch.Generator().manual_seed(seed)
    return low + (high - low) * torch.rand(n, 1, size, size, generator=g, dtype=dtype)


def _grid_images(n=4, size=12, seed=0):
    """Images on the 8-bit grid k/255 (as loaded from uint8 files)."""
    return (_images(n, size, seed) * 255).round() / 255


# ----------------------------------------------------------------------------- operations

@pytest.mark.parametrize("name", MAGNITUDE_OPS)
def test_zero_magnitude_is_the_identity(name):
    x = _grid_images()
    g = torch.Generator().manual_seed(0)
    out = OPS[name](x, torch.zeros(len(x), dtype=x.dtype), g)
    # geometric operations resample at the pixel centres: exact up to rounding of the sampling grid
    assert torch.allclose(out, x, atol=1e-12, rtol=0), (out - x).abs().max()


@pytest.mark.parametrize("name", MAGNITUDE_OPS)
def test_operations_change_images_at_full_magnitude(name):
    if name == "color":
        x = torch.rand(3, 3, 12, 12, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    else:
        x = _grid_images(n=3)
    out = OPS[name](x, torch.full((3,), 0.8, dtype=x.dtype), torch.Generator().manual_seed(0))
    assert out.shape == x.shape and not torch.allclose(out, x)
    assert out.min() >= 0 and out.max() <= 1


EXACT_OPS = sorted(EXACT_MAGNITUDE)


@pytest.mark.parametrize("name", EXACT_OPS)
def test_gradcheck_exact_operations_float64(name):
    channels = 3 if name == "color" else 1
    g = torch.Generator().manual_seed(3)
    # mid-range pixels and small magnitudes keep the colour blends away from their [0, 1] clamp
    x = (0.3 + 0.4 * torch.rand(2, channels, 6, 6, generator=g, dtype=torch.float64)).requires_grad_(True)
    m = torch.tensor([0.23, -0.17], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: OPS[name](a, b), (x, m), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", ["invert", "auto_contrast", "solarize"])
def test_gradcheck_in_the_image(name):
    x = _images(n=2, size=5, seed=4).requires_grad_(True)
    m = torch.tensor([0.5, 0.3], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a: OPS[name](a, m), (x,), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", ["solarize", "posterize", "cutout"])
def test_straight_through_magnitude_gradient(name):
    """Piecewise-constant magnitudes get DADA's straight-through gradient: d sum(w * out) / d m_i = sum(w_i)."""
    x = _grid_images(n=3)
    m = torch.tensor([0.4, 0.7, 0.9], dtype=torch.float64, requires_grad=True)
    w = torch.rand(x.shape, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    out = OPS[name](x, m, torch.Generator().manual_seed(0))
    (grad,) = torch.autograd.grad((w * out).sum(), m)
    assert torch.allclose(grad, w.sum(dim=(1, 2, 3)))


@pytest.mark.parametrize("name", ["posterize", "equalize"])
def test_piecewise_constant_operations_pass_the_image_gradient_straight_through(name):
    x = _grid_images(n=2).requires_grad_(True)
    w = torch.rand(x.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    (grad,) = torch.autograd.grad((w * OPS[name](x, torch.full((2,), 0.9, dtype=x.dtype))).sum(), x)
    assert torch.equal(grad, w)


def _pil_reference(name, image: np.ndarray, level: float) -> np.ndarray:
    from PIL import Image, ImageOps

    img = Image.fromarray(image)
    if name == "equalize":
        return np.asarray(ImageOps.equalize(img))
    if name == "auto_contrast":
        return np.asarray(ImageOps.autocontrast(img))
    if name == "invert":
        return np.asarray(ImageOps.invert(img))
    if name == "posterize":
        return np.asarray(ImageOps.posterize(img, 8 - round(4 * level)))
    return np.asarray(ImageOps.solarize(img, round(256 * (1 - level))))


@pytest.mark.parametrize("name,level", [("equalize", 0.0), ("auto_contrast", 0.0), ("invert", 0.0),
                                        ("posterize", 0.75), ("solarize", 0.4)])
def test_pixel_maps_match_pil(name, level):
    pytest.importorskip("PIL")
    rng = np.random.default_rng(0)
    image = rng.integers(20, 200, size=(28, 28), dtype=np.uint8)
    image[10:14, 5:20] = 230
    x = torch.from_numpy(image.astype(np.float64) / 255).view(1, 1, 28, 28)
    ours = OPS[name](x, torch.tensor([level], dtype=torch.float64))
    expected = _pil_reference(name, image, level).astype(np.float64) / 255
    # auto-contrast is computed in floats, PIL truncates to 8 bits: less than one level apart; the others exact
    tolerance = 1 / 255 if name == "auto_contrast" else 0.0
    assert np.abs(ours.view(28, 28).numpy() - expected).max() <= tolerance + 1e-9


@pytest.mark.parametrize("name", ["shear_x", "translate_y", "rotate", "contrast", "brightness", "sharpness"])
def test_differentiable_operations_run_inside_vmap(name):
    x = _images(n=3)
    m = torch.tensor([0.2, -0.5, 0.9], dtype=torch.float64)
    batched = OPS[name](x, m)
    mapped = torch.func.vmap(lambda a, b: OPS[name](a[None], b[None])[0])(x, m)
    assert torch.allclose(batched, mapped, atol=1e-12)


# ----------------------------------------------------------------------------- policies

FILLERS = [NoAugmentation, RandomCrop, lambda: RandomCrop(padding=3, flip=True), Cutout, RandAugment,
           TrivialAugment, AutoAugment, lambda: AutoAugment(policy="cifar10"), UntrainedDADA, DADA,
           lambda: DADA(exact_magnitude_gradient=False),
           # only operations with exact magnitude gradients: the magnitudes' meta-gradient is checked
           # against finite differences through MAML's inner loop
           lambda: DADA(ops=("rotate", "shear_x", "translate_y", "contrast", "brightness", "invert"))]


def test_every_registered_augmentation_has_a_check_filler_case():
    from autometa.slots import FILLERS as REGISTERED
    from autometa.slots import registered_name

    assert {registered_name(type(factory())) for factory in FILLERS} == set(REGISTERED["augmentation"])


@pytest.mark.parametrize("factory", FILLERS)
def test_check_filler(factory):
    check_filler(factory, backends=("optuna",))


@pytest.mark.parametrize("name", ["none", "random_crop", "cutout", "rand_augment", "trivial_augment", "auto_augment",
                                  "dada_untrained", "dada"])
def test_seeded_and_reproducible(name):
    filler = build_filler("augmentation", name).double()
    x, y = _grid_images(n=8, size=16), torch.arange(8)
    first = filler.augment(x, y, None, torch.Generator().manual_seed(5))[0]
    second = filler.augment(x, y, None, torch.Generator().manual_seed(5))[0]
    other = filler.augment(x, y, None, torch.Generator().manual_seed(6))[0]
    assert torch.equal(first, second)
    assert name == "none" or not torch.equal(first, other)


def test_random_crop_without_flip_is_a_shifted_window():
    x = _grid_images(n=6, size=10)
    out, _ = RandomCrop(padding=2).augment(x, torch.arange(6), None, torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(6):
        windows = [padded[i, :, dy:dy + 10, dx:dx + 10] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(out[i], w) for w in windows)
        assert not any(torch.equal(out[i], w.flip(-1)) and not torch.equal(w, w.flip(-1)) for w in windows
                       if not any(torch.equal(out[i], v) for v in windows))


def test_rand_augment_magnitude_zero_touches_only_magnitude_free_operations():
    x = _grid_images(n=16, size=12)
    ops = tuple(op for op in RandAugment().ops if op not in NO_MAGNITUDE)
    out, _ = RandAugment(n=2, m=0, ops=ops).augment(x, torch.arange(16), None, torch.Generator().manual_seed(0))
    assert torch.allclose(out, x, atol=1e-12)


def test_autoaugment_policies_are_25_pairs_of_known_operations():
    for table in AUTOAUGMENT_POLICIES.values():
        assert len(table) == 25
        assert all(op in OPS and 0 <= p <= 1 and 0 <= level <= 1 for pair in table for op, p, level in pair)


def test_untrained_dada_is_fixed_and_dada_starts_uniform():
    assert UntrainedDADA().meta_params() == {}
    policy = DADA().policy()
    k = len(GREY_OPS) * (len(GREY_OPS) - 1)
    assert policy["weights"].shape == (k,) and torch.allclose(policy["weights"], torch.full((k,), 1 / k))
    assert torch.allclose(policy["probabilities"], torch.full((k, 2), 0.5))
    assert torch.allclose(policy["magnitudes"], torch.full((k, 2), 0.5))


def test_bad_arguments_are_config_errors():
    with pytest.raises(ConfigError, match="unknown operation"):
        RandAugment(ops=("rotate", "twist"))
    with pytest.raises(ConfigError, match="init_probability"):
        DADA(init_probability=1.0)
    with pytest.raises(ConfigError, match="shape"):
        Cutout().augment(torch.rand(4, 784), torch.arange(4))
    with pytest.raises(ConfigError, match="vmap"):
        ProtoNet(Conv4(out_features=None, hidden=4), augmentation="dada", batching="vmap")


# ----------------------------------------------------------------------------- RELAX

def test_conditional_gumbel_has_the_given_argmax():
    logits = torch.tensor([0.3, -1.0, 2.0, 0.0])
    choice = torch.tensor([0, 1, 2, 3] * 50)
    z = conditional_gumbel(logits, choice, torch.Generator().manual_seed(0))
    assert torch.equal(z.argmax(-1), choice)


def test_conditional_gumbel_marginal_is_the_unconditional_gumbel():
    """b ~ softmax(logits), then z̃ ~ p(z | b): z̃ is distributed as logits + Gumbel noise (mean logits + γ,
    variance π²/6 per coordinate)."""
    logits = torch.tensor([0.3, -1.0, 2.0, 0.0], dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    choice = torch.multinomial(torch.softmax(logits, -1), 40000, replacement=True, generator=g)
    z = conditional_gumbel(logits, choice, g)
    assert torch.allclose(z.mean(0), logits + 0.5772156649, atol=0.03), z.mean(0) - logits
    assert torch.allclose(z.var(0), torch.full((4,), torch.pi ** 2 / 6, dtype=torch.float64), atol=0.06)


def test_relax_surrogate_gradient_is_the_relax_formula():
    """d surrogate / d logits = (f - c(z̃)) d log p(b) + d c(z) - d c(z̃), with c(z̃) a constant in the first term."""
    logits = torch.tensor([0.5, -0.5, 0.0, 1.0], requires_grad=True)
    control = ControlVariate(4, hidden=8, seed=2)
    with torch.no_grad():
        control.net[2].weight.mul_(20.0)  # a control variate far from zero, so that every term counts
    noise = -torch.log(-torch.log(torch.rand(5, 4, generator=torch.Generator().manual_seed(1))))
    z = logits + noise
    choice = z.argmax(-1)
    f = torch.tensor(1.7)
    surrogate = relax_surrogate(f, logits, z, choice, control, torch.Generator().manual_seed(3))
    (got,) = torch.autograd.grad(surrogate, logits, retain_graph=True)
    z_tilde = conditional_gumbel(logits, choice, torch.Generator().manual_seed(3))
    (score,) = torch.autograd.grad(torch.log_softmax(logits, -1)[choice].sum(), logits)
    (dz,) = torch.autograd.grad(control(z), logits)
    (dz_tilde,) = torch.autograd.grad(control(z_tilde), logits)
    expected = (f - control(z_tilde).detach()) * score + dz - dz_tilde
    assert torch.allclose(got, expected, atol=1e-6), (got, expected)


def test_relax_is_unbiased():
    """The mean RELAX estimate of d E[f(b)] / d logits equals the exact gradient (one image per sample)."""
    torch.manual_seed(0)
    logits = torch.tensor([0.5, -0.5, 0.0], requires_grad=True)
    values = torch.tensor([1.0, 3.0, -2.0])
    control = ControlVariate(3, hidden=4, seed=1)
    generator = torch.Generator().manual_seed(0)
    estimates = []
    for _ in range(1000):
        z = logits + -torch.log(-torch.log(torch.rand(1, 3, generator=generator).clamp(1e-10, 1 - 1e-10)))
        choice = z.argmax(-1)
        surrogate = relax_surrogate(values[choice].sum(), logits, z, choice, control, generator)
        estimates.append(torch.autograd.grad(surrogate, logits)[0])
    estimates = torch.stack(estimates)
    exact = torch.autograd.grad((torch.softmax(logits, -1) * values).sum(), logits)[0]
    stderr = estimates.std(0) / len(estimates) ** 0.5
    assert ((estimates.mean(0) - exact).abs() < 4 * stderr + 1e-3).all(), (estimates.mean(0), exact, stderr)


# ----------------------------------------------------------------------------- the search

def _toy_classification(n, seed, size=12):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    x = 0.2 * torch.rand(n, 1, size, size, generator=g)
    for c in range(3):
        x[y == c, :, 2 + 3 * c:4 + 3 * c, 3:9] += 0.7
    return x.clamp(0, 1), y


def test_unrolled_hypergradient_of_the_magnitudes_matches_finite_differences():
    x, y = _toy_classification(8, 0)
    xv, yv = _toy_classification(8, 1)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(144, 3)).double()
    policy = DADA(ops=("rotate", "translate_x", "contrast")).double()
    meta = {k: v.detach().clone().requires_grad_(True) for k, v in policy.meta_params().items()}
    problem = unrolled_problem(model, dict(model.named_parameters()), policy, x.double(), y, xv.double(), yv,
                               lr=0.5, seed=3)
    from autometa.hypergrad import Unrolled

    def outer():
        return Unrolled()(problem, meta)[0]

    (grad,) = torch.autograd.grad(outer(), meta["magnitude_logits"])
    used = grad.abs().flatten().topk(3).indices
    for i in used.tolist():
        flat = meta["magnitude_logits"].detach().view(-1)
        with torch.no_grad():
            flat[i] += 1e-6
            plus = outer().item()
            flat[i] -= 2e-6
            minus = outer().item()
            flat[i] += 1e-6
        assert abs(grad.view(-1)[i].item() - (plus - minus) / 2e-6) < 1e-6 + 1e-4 * abs(grad.view(-1)[i].item())


@pytest.mark.parametrize("estimator", ["relax", "straight_through"])
def test_dada_search_moves_the_policy(estimator):
    x, y = _toy_classification(64, 0)
    xv, yv = _toy_classification(32, 1)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(144, 3))
    policy = DADA(ops=("rotate", "translate_x", "invert", "cutout"))
    before = {k: v.detach().clone() for k, v in policy.meta_params().items()}
    result = dada_search(policy, model, x, y, xv, yv, epochs=1, batch_size=16, policy_estimator=estimator, seed=0)
    assert len(result["history"]) == 4
    for name, value in policy.meta_params().items():
        assert not torch.equal(value, before[name]), name
    again = DADA(ops=("rotate", "translate_x", "invert", "cutout"))
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(144, 3))
    dada_search(again, model, x, y, xv, yv, epochs=1, batch_size=16, policy_estimator=estimator, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(policy.parameters(), again.parameters()))


# ----------------------------------------------------------------------------- few-shot learners

def _episodes(tasks=2, ways=3, size=28):
    from autometa.tasks import TaskBatch

    g = torch.Generator().manual_seed(0)
    sx = torch.rand(tasks, ways, 1, size, size, generator=g)
    qx = torch.rand(tasks, 2 * ways, 1, size, size, generator=g)
    return TaskBatch(sx, torch.arange(ways).repeat(tasks, 1), qx, torch.arange(ways).repeat(tasks, 2))


@pytest.mark.parametrize("learner_cls", [ProtoNet, MAML])
def test_support_augmentation_is_learned_through_the_query_loss(learner_cls):
    torch.manual_seed(0)
    net = Conv4(out_features=None if learner_cls is ProtoNet else 3, hidden=4)
    learner = learner_cls(net, augmentation="dada")
    assert {"augmentation.policy_logits", "augmentation.magnitude_logits"} <= set(learner.meta_params())
    batch = _episodes()
    learner.meta_backward(batch)
    grads = {k: p.grad for k, p in learner.named_parameters() if k.startswith("augmentation.")}
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads.values())
    first, second = learner.evaluate(batch), learner.evaluate(batch)
    assert torch.equal(first["loss"], second["loss"])  # each task is augmented by a generator it seeds


def test_support_augmentation_changes_prototypes():
    torch.manual_seed(0)
    net = Conv4(out_features=None, hidden=4)
    plain = ProtoNet(net)
    augmented = ProtoNet(net, augmentation={"name": "rand_augment", "n": 2, "m": 20})
    batch = _episodes()
    assert not torch.equal(plain.evaluate(batch)["loss"], augmented.evaluate(batch)["loss"])
    # "none" adds an identical copy: the same as plain ProtoNet on a support set given twice
    from autometa.tasks import TaskBatch

    doubled = TaskBatch(torch.cat([batch.support_x] * 2, 1), torch.cat([batch.support_y] * 2, 1), batch.query_x,
                        batch.query_y)
    assert torch.allclose(ProtoNet(net, augmentation="none").evaluate(batch)["loss"], plain.evaluate(doubled)["loss"])


# ----------------------------------------------------------------------------- the study (smoke tier)

def _tiny_splits():
    """Train and test splits of 3-class 16x16 images (a bar whose row gives the class), in memory."""
    from autometa.data import ArrayDataset

    x, y = _toy_classification(300, 0, size=16)
    xt, yt = _toy_classification(90, 1, size=16)
    return ArrayDataset(x.numpy(), y.numpy()), ArrayDataset(xt.numpy(), yt.numpy())


def test_study_smoke(tmp_path):
    """The whole study (search, final training, summary, resume) on a tiny in-memory dataset."""
    from autometa.compare._augmentation import run_study

    config = {"study": "augmentation", "search": {"train_size": 60, "val_size": 60, "epochs": 1, "batch_size": 30},
              "final": [{"train_size": 120, "epochs": 1}], "test_size": None,
              "model": {"name": "conv4", "hidden": 4, "blocks": 2}, "seeds": [0, 1],
              "arms": {"none": {"kind": "hand-crafted", "augmentation": "none"},
                       "dada": {"kind": "learned", "augmentation": {"name": "dada", "ops": ["rotate", "invert"]}}}}
    splits = _tiny_splits()
    out = run_study(config, tmp_path / "study", log=lambda _: None, splits=splits, plot=False)
    summary = out["summary"]["120"]
    assert summary["none"]["test_acc"]["n"] == 2 and "vs_reference" in summary["dada"]
    assert (tmp_path / "study" / "summary.md").exists() and (tmp_path / "study" / "results.json").exists()
    searched = out["searches"]["dada"][0]["policy"]
    assert len(searched["weights"]) == 2 and searched["magnitudes"] != [[0.5, 0.5], [0.5, 0.5]]
    again = run_study(config, tmp_path / "study", log=lambda _: None, resume=True, plot=False)  # all reused
    assert again["summary"] == out["summary"]


def test_study_config_errors_are_reported_together():
    from autometa.compare._augmentation import load_study_config

    with pytest.raises(ConfigError) as info:
        load_study_config({"study": "augmentation", "seeds": [0], "arms": {
            "none": {"kind": "hand-crafted", "augmentation": "none"},
            "bad": {"kind": "learned", "augmentation": "rand_augment"},
            "typo": {"kind": "hand-crafted", "augmentaton": "none"}}})
    message = str(info.value)
    assert "trainable policy" in message and "augmentaton" in message
