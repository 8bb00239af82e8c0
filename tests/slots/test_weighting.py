"""The weighting slot (uniform, Meta-Weight-Net, L2RW), generalised cross-entropy, the label-noise
generators and the noisy-label trainer, each against a hand-written float64 computation."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from autometa.errors import AutometaError, ConfigError, ResultsDirError
from autometa.learners import NoisyLabelTrainer, clean_holdout, corrupt_labels, noise_transition
from autometa.slots import build_filler
from autometa.slots.loss._robust import GeneralizedCrossEntropy
from autometa.slots.weighting import L2RW, MetaWeightNet, UniformWeighting
from autometa.testing import check_filler
from autometa.testing._fillers import check_meta_gradient
from tests.conftest import needs_data


def _tiny(seed=0):
    """A float64 classifier (3 -> 8 -> 4) with a noisy batch of 10 and a clean batch of 6."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 4)).double()
    g = torch.Generator().manual_seed(seed)
    x, x_clean = torch.randn(10, 3, generator=g, dtype=torch.float64), torch.randn(6, 3, generator=g,
                                                                                    dtype=torch.float64)
    y, y_clean = torch.randint(0, 4, (10,), generator=g), torch.randint(0, 4, (6,), generator=g)
    return model, x, y, x_clean, y_clean


def _forward(params, x):
    """The tiny classifier written out by hand (no functional_call)."""
    hidden = torch.tanh(x @ params["0.weight"].T + params["0.bias"])
    return hidden @ params["2.weight"].T + params["2.bias"]


# --- check_filler -----------------------------------------------------------------------------------

@pytest.mark.parametrize("factory", [UniformWeighting, lambda: MetaWeightNet(hidden=8), L2RW],
                         ids=["uniform", "meta_weight_net", "l2rw"])
def test_weighting_fillers_conform(factory):
    check_filler(factory)


def test_generalized_cross_entropy_conforms_and_equals_the_formula():
    def reference(outputs, targets, q=0.7):
        p = torch.softmax(outputs, -1).gather(-1, targets[:, None]).squeeze(-1)
        return (1 - p ** q) / q

    check_filler(lambda: build_filler("loss", {"name": "generalized_cross_entropy", "q": 0.7}), reference=reference)
    outputs, targets = torch.randn(5, 3, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1])
    p = torch.softmax(outputs, -1)[torch.arange(5), targets]
    torch.testing.assert_close(GeneralizedCrossEntropy(q=1.0).loss(outputs, targets), 1 - p)  # MAE at q = 1


class _OwnWeightsMWN(MetaWeightNet):
    """Planted bug: reads its own parameters, not ``meta``: the look-ahead cannot see ω."""

    def weighting(self, losses, outputs, targets, meta=None):
        return super().weighting(losses, outputs, targets, None)


def test_normalised_meta_weight_net_meta_gradient_equals_finite_differences():
    check_meta_gradient(lambda: MetaWeightNet(hidden=8, normalize=True))
    weights = MetaWeightNet(hidden=8, normalize=True).weighting(torch.rand(7), None, None)
    assert weights.mean().item() == pytest.approx(1.0)


def test_check_filler_catches_a_weighting_net_that_ignores_meta():
    with pytest.raises(AssertionError, match="meta-gradient"):
        check_meta_gradient(lambda: _OwnWeightsMWN(hidden=8))


# --- Meta-Weight-Net: the look-ahead meta-gradient --------------------------------------------------

def _hand_written_mwn_gradient(model, mwn, x, y, x_clean, y_clean, lr):
    """Shu et al.'s Algorithm 1, step by step: weights from the detached losses, a virtual SGD step
    with create_graph, the clean loss, and its gradient with respect to the weighting network."""
    params = {k: v.detach().clone().requires_grad_(True) for k, v in model.named_parameters()}
    omega = {k: v.detach().clone().requires_grad_(True) for k, v in mwn.named_parameters()}
    losses = F.cross_entropy(_forward(params, x), y, reduction="none")
    hidden = torch.relu(losses.detach()[:, None] @ omega["net.0.weight"].T + omega["net.0.bias"])
    weights = torch.sigmoid(hidden @ omega["net.2.weight"].T + omega["net.2.bias"]).squeeze(-1)
    grads = torch.autograd.grad((weights * losses).sum() / len(losses), list(params.values()), create_graph=True)
    virtual = {k: v - lr * g for (k, v), g in zip(params.items(), grads)}
    clean = F.cross_entropy(_forward(virtual, x_clean), y_clean)
    return dict(zip(omega, torch.autograd.grad(clean, list(omega.values()))))


def test_meta_weight_net_meta_gradient_equals_hand_written_lookahead_and_finite_differences():
    model, x, y, x_clean, y_clean = _tiny()
    mwn = MetaWeightNet(hidden=5, seed=3).double()
    trainer = NoisyLabelTrainer(model, weighting=mwn, lr=0.5)
    meta = mwn.meta_params()
    clean, _ = trainer.lookahead(x, y, x_clean, y_clean, meta)
    grads = dict(zip(meta, torch.autograd.grad(clean, list(meta.values()))))
    expected = _hand_written_mwn_gradient(model, mwn, x, y, x_clean, y_clean, lr=0.5)
    for k in expected:
        torch.testing.assert_close(grads[k], expected[k], rtol=1e-10, atol=1e-12)
    assert max(g.abs().max().item() for g in grads.values()) > 1e-4  # a real signal, not zeros
    # and a central finite difference on one coordinate of each tensor
    for k, v in meta.items():
        flat = v.detach().view(-1)
        with torch.no_grad():
            original = flat[0].item()
            flat[0] = original + 1e-6
            plus = trainer.lookahead(x, y, x_clean, y_clean, meta)[0].item()
            flat[0] = original - 1e-6
            minus = trainer.lookahead(x, y, x_clean, y_clean, meta)[0].item()
            flat[0] = original
        assert grads[k].view(-1)[0].item() == pytest.approx((plus - minus) / 2e-6, rel=1e-5, abs=1e-9)


def test_trainer_step_updates_meta_weight_net_by_adam_on_the_lookahead_gradient():
    model, x, y, x_clean, y_clean = _tiny()
    mwn = MetaWeightNet(hidden=5, seed=3).double()
    expected = _hand_written_mwn_gradient(model, mwn, x, y, x_clean, y_clean, lr=0.5)
    shadow = {k: v.detach().clone().requires_grad_(True) for k, v in mwn.named_parameters()}
    adam = torch.optim.Adam(list(shadow.values()), lr=1e-2, weight_decay=1e-4)
    for k, v in shadow.items():
        v.grad = expected[k]
    adam.step()
    trainer = NoisyLabelTrainer(model, weighting=mwn, lr=0.5, meta_lr=1e-2, meta_weight_decay=1e-4)
    trainer.step(x, y, x_clean, y_clean)
    for k, v in mwn.named_parameters():
        torch.testing.assert_close(v.detach(), shadow[k].detach(), rtol=1e-12, atol=1e-14)


# --- L2RW ------------------------------------------------------------------------------------------

def test_l2rw_weights_equal_the_per_example_gradient_alignment():
    """At eps = 0, dL_clean/deps_i = -(lr / n) grad L_clean . grad loss_i, so the weights are
    max(grad L_clean . grad loss_i, 0), normalised to mean 1: computed here one example at a time."""
    model, x, y, x_clean, y_clean = _tiny(seed=1)
    params = list(model.parameters())
    clean_grad = torch.autograd.grad(F.cross_entropy(model(x_clean), y_clean), params)
    align = []
    for i in range(len(y)):
        g_i = torch.autograd.grad(F.cross_entropy(model(x[i:i + 1]), y[i:i + 1]), params)
        align.append(sum((a * b).sum() for a, b in zip(clean_grad, g_i)))
    expected = torch.clamp(torch.stack(align), min=0)
    expected = expected * len(expected) / expected.sum()
    trainer = NoisyLabelTrainer(model, weighting="l2rw", lr=0.1)
    weights = trainer.batch_weights(x, y, x_clean, y_clean)
    torch.testing.assert_close(weights, expected, rtol=1e-8, atol=1e-10)
    assert (weights == 0).any() and (weights > 0).any()  # the clipping is exercised on this batch


def test_l2rw_gives_zero_weights_when_no_example_helps():
    assert torch.equal(L2RW().weights_from_meta_gradient({"eps": torch.tensor([0.5, 0.0, 2.0])}), torch.zeros(3))
    with pytest.raises(ConfigError, match="eps"):
        L2RW().weights_from_meta_gradient({})


# --- label noise and the clean hold-out -------------------------------------------------------------

@pytest.mark.parametrize("kind,rate,flipped", [("uniform", 0.4, 0.36), ("uniform", 0.6, 0.54),
                                               ("symmetric", 0.4, 0.4), ("pair", 0.4, 0.4)])
def test_noise_generators_flip_the_stated_fraction(kind, rate, flipped):
    labels = np.random.default_rng(5).integers(0, 10, 200_000)
    noisy = corrupt_labels(labels, kind, rate, classes=10, seed=0)
    assert (noisy != labels).mean() == pytest.approx(flipped, abs=0.005)
    assert np.array_equal(noisy, corrupt_labels(labels, kind, rate, classes=10, seed=0))
    assert not np.array_equal(noisy, corrupt_labels(labels, kind, rate, classes=10, seed=1))
    if kind == "pair":
        changed = noisy != labels
        assert np.array_equal(noisy[changed], (labels[changed] + 1) % 10)
    if kind == "symmetric":  # every other class receives about the same share
        moved = noisy[(labels == 3) & (noisy != 3)]
        shares = np.bincount(moved, minlength=10)[[c for c in range(10) if c != 3]] / len(moved)
        assert np.allclose(shares, 1 / 9, atol=0.01)


def test_noise_transition_rows_are_distributions():
    for kind in ("uniform", "symmetric", "pair"):
        matrix = noise_transition(kind, 0.3, 5)
        assert np.allclose(matrix.sum(1), 1) and (matrix >= 0).all()
    assert noise_transition("uniform", 0.4, 10)[0, 0] == pytest.approx(0.64)


def test_clean_holdout_is_balanced_disjoint_and_seeded():
    labels = np.random.default_rng(0).integers(0, 10, 5000)
    clean, rest = clean_holdout(labels, 1000, seed=0)
    assert len(clean) == 1000 and np.bincount(labels[clean]).tolist() == [100] * 10
    assert not set(clean) & set(rest) and len(clean) + len(rest) == 5000
    assert np.array_equal(clean, clean_holdout(labels, 1000, seed=0)[0])


def test_bad_input_raises_one_clear_error():
    labels = np.arange(10)
    cases = [
        (lambda: corrupt_labels(labels, "unifrom", 0.4), "Unknown label-noise kind 'unifrom'"),
        (lambda: corrupt_labels(labels, "uniform", 1.5), r"rate.*Got 1.5"),
        (lambda: corrupt_labels(labels, "uniform", 0.4, classes=5), r"Labels must lie in \[0, 5\)"),
        (lambda: clean_holdout(labels, 15), "positive multiple of the 10 classes"),
        (lambda: MetaWeightNet(hidden=0), r"`hidden` of MetaWeightNet.*Got 0"),
        (lambda: build_filler("weighting", "meta_weigth_net"), "did you mean 'meta_weight_net'"),
        (lambda: GeneralizedCrossEntropy(q=0), r"`q` of GeneralizedCrossEntropy.*Got 0"),
        (lambda: NoisyLabelTrainer(nn.Linear(3, 4), lr=-1), r"`lr` of NoisyLabelTrainer.*Got -1"),
        (lambda: NoisyLabelTrainer(nn.Linear(3, 4), loss="mse"), "applies to regression"),
    ]
    for fn, message in cases:
        with pytest.raises(ConfigError, match=message):
            fn()
    trainer = NoisyLabelTrainer(nn.Linear(3, 4), weighting="meta_weight_net")
    with pytest.raises(AutometaError, match="pass x_clean and y_clean"):
        trainer.step(torch.randn(4, 3), torch.tensor([0, 1, 2, 3]))


# --- the noisy-label study: config validation and the smoke tier ------------------------------------

def test_study_config_reports_every_problem_at_once():
    from autometa.compare._noisy_labels import load_study_config

    bad = {"epoch": 3, "noise": [{"kind": "uniform", "rate": 1.4}], "reference": "ce",
           "arms": {"ce": {"kind": "hand-crafted"},
                    "mwn": {"kind": "learnt", "weighting": "meta_weigth_net", "finetun": {"epochs": 1}}}}
    with pytest.raises(ConfigError) as info:
        load_study_config(bad)
    message = str(info.value)
    for part in ("unknown key 'epoch'", "did you mean 'epochs'", "rate in [0, 1]", "kind: hand-crafted or learned",
                 "did you mean 'meta_weight_net'", "unknown key 'finetun'"):
        assert part in message, part


@needs_data("fashion_mnist.npz")
def test_smoke_study_runs_every_arm_and_reports_three_accuracies(tmp_path):
    from autometa.compare._noisy_labels import run_study

    config = {"noise": [{"kind": "uniform", "rate": 0.4}], "clean_size": 100, "train_size": 600, "test_size": 300,
              "model": {"name": "mlp", "hidden": [16]}, "epochs": 2, "batch_size": 50, "clean_batch_size": 20,
              "seeds": [0, 1],
              "arms": {"uniform_ce": {"kind": "hand-crafted"},
                       "focal": {"kind": "hand-crafted", "loss": {"name": "focal", "gamma": 2.0}},
                       "gce": {"kind": "hand-crafted", "loss": {"name": "generalized_cross_entropy", "q": 0.7}},
                       "ce_finetuned": {"kind": "hand-crafted", "finetune": {"epochs": 1, "lr": 0.01}},
                       "meta_weight_net": {"kind": "learned", "weighting": {"name": "meta_weight_net", "hidden": 8}},
                       "l2rw": {"kind": "learned", "weighting": "l2rw"}}}
    import autometa

    out = autometa.compare({"study": "noisy_labels", **config}, tmp_path, quiet=True)  # through `autometa compare`
    runs = out["results"]["uniform-40%"]
    for arm, results in runs.items():
        for r in results:
            accs = [e["test_acc"] for e in r["epochs"]]
            assert len(accs) == (3 if arm == "ce_finetuned" else 2)
            assert r["final"] == accs[-1] and r["best"] == max(accs)
            stopped = max(r["epochs"], key=lambda e: e["clean_acc"])
            assert r["early_stopped"] == stopped["test_acc"]
            assert 0.3 < r["flipped"] < 0.42
    # paired: every arm of a seed saw the same noisy labels; different seeds differ
    assert runs["uniform_ce"][0]["flipped"] == runs["l2rw"][0]["flipped"] != runs["l2rw"][1]["flipped"]
    assert len(runs["meta_weight_net"][0]["weight_curve"]["weight"]) == 81
    assert (tmp_path / "weight_curves.png").is_file() and "early-stopped" in (tmp_path / "summary.md").read_text()
    # seeded: the same config reproduces a run exactly (a fresh directory)
    again = run_study({**config, "seeds": [1], "arms": {k: config["arms"][k] for k in ("uniform_ce", "l2rw")},
                       "reference": "uniform_ce"}, tmp_path / "again", log=lambda _: None)
    # the results directory: not silently reused; resumed only with the same config (no run repeats)
    with pytest.raises(ResultsDirError, match="--resume"):
        run_study(config, tmp_path, log=lambda _: None)
    with pytest.raises(ResultsDirError, match="different study config"):
        run_study({**config, "epochs": 3}, tmp_path, log=lambda _: None, resume=True)
    resumed = run_study(config, tmp_path, log=lambda _: None, resume=True)
    assert resumed["results"] == out["results"]
    strip = lambda r: [(e["test_acc"], e["clean_acc"], e["train_loss"]) for e in r["epochs"]]
    assert strip(again["results"]["uniform-40%"]["l2rw"][0]) == strip(runs["l2rw"][1])
