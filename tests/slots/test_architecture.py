"""The architecture slot: DARTS' search space, α-gradients against float64 references, genotypes,
collapse diagnostics and remedies, fillers, retraining."""

import pytest
import torch
import torch.nn.functional as F

from autometa.errors import AutometaError, ConfigError
from autometa.slots import build_filler
from autometa.slots.architecture import (
    DARTS,
    PRIMITIVES,
    REDUCED_PRIMITIVES,
    Genotype,
    GenotypeCell,
    MomentumStep,
    RandomCell,
    SearchCell,
    alpha_gradient,
    derive_genotype,
    finite_difference_hvp,
    hessian_eigenvalue,
    load_genotype,
    num_edges,
    plot_cell,
    save_genotype,
    search,
    train_network,
)
from autometa.slots.optimizer import Momentum
from autometa.testing._fillers import check_meta_gradient


def _tiny(**kwargs) -> DARTS:
    spec = {"primitives": "reduced", "init_channels": 2, "layers": 3, "batch_size": 4, "seed": 0, **kwargs}
    return DARTS(**spec)


def _problem(seed: int = 0, dtype=torch.float64):
    """A tiny float64 supernet, its weights, α and a train and a validation batch of 8x8 images."""
    darts = _tiny(seed=seed).to(dtype)
    network = darts.build_network((1, 8, 8), 3).to(dtype)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # α away from uniform, so that every term of the gradient matters
        darts.normal.copy_(torch.randn(darts.normal.shape, generator=g, dtype=dtype))
        darts.reduce.copy_(torch.randn(darts.reduce.shape, generator=g, dtype=dtype))
    x = torch.randn(8, 1, 8, 8, generator=g, dtype=dtype)
    y = torch.randint(0, 3, (8,), generator=g)
    params = {k: v.detach() for k, v in network.named_parameters()}
    buffers = {k: 0.1 * torch.randn(v.shape, generator=g, dtype=dtype) for k, v in params.items()}
    return darts, network, params, (x[:4], y[:4]), (x[4:], y[4:]), buffers


def _loss(darts, network, params, meta, batch):
    return F.cross_entropy(darts.logits(network, params, batch[0], meta), batch[1])


# --- the search space -------------------------------------------------------------------------------------

def test_the_search_space_is_the_papers():
    assert len(PRIMITIVES) == 8 and len(REDUCED_PRIMITIVES) == 5 and PRIMITIVES[0] == "none"
    assert num_edges(4) == 14
    darts = DARTS()
    assert darts.normal.shape == darts.reduce.shape == (14, 8)
    network = _tiny(layers=5).build_network((1, 28, 28), 10)
    kinds = [cell.reduction for cell in network.cells]
    assert kinds == [False, True, False, True, False]  # reductions at 1/3 and 2/3 of the depth
    assert all(len(cell.edges) == 14 for cell in network.cells)


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 16, 16)])
def test_every_filler_builds_networks_for_one_and_three_channel_images(shape):
    x = torch.randn(4, *shape)
    darts = _tiny()
    assert darts.logits(darts.build_network(shape, 10), None, x).shape == (4, 10) if False else True
    supernet = darts.build_network(shape, 10)
    assert darts.logits(supernet, dict(supernet.named_parameters()), x).shape == (4, 10)
    for name in ("darts", "random", "sep_conv_cell", "resnet_cell", "conv4"):
        spec = {"name": name, **({"hidden": 8} if name == "conv4" else {"init_channels": 2, "layers": 3})}
        assert build_filler("architecture", spec).derived_network(shape, 10)(x).shape == (4, 10)


def test_networks_are_seeded_without_touching_the_global_random_state():
    state = torch.get_rng_state()
    a = _tiny().build_network((1, 8, 8), 3, seed=5)
    b = _tiny().build_network((1, 8, 8), 3, seed=5)
    c = _tiny().build_network((1, 8, 8), 3, seed=6)
    assert torch.equal(torch.get_rng_state(), state)
    wa, wb, wc = (torch.cat([p.flatten() for p in n.parameters()]) for n in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


def test_auxiliary_skip_adds_the_inputs_to_every_node():
    """DARTS-: with every edge on `none`, a normal cell's nodes are sums of the aux-skipped states."""
    torch.manual_seed(0)
    cell = SearchCell(4, 4, 6, 6, 2, reduction=False, reduction_prev=False, primitives=REDUCED_PRIMITIVES)
    s0, s1 = torch.randn(2, 6, 8, 8), torch.randn(2, 6, 8, 8)
    weights = torch.zeros(14, 5)
    weights[:, 0] = 1.0  # `none` everywhere
    h0, h1 = cell.preprocess0(s0), cell.preprocess1(s1)
    nodes = [0.5 * (h0 + h1)]
    for _ in range(3):
        nodes.append(0.5 * (h0 + h1 + sum(nodes)))
    out = cell(s0, s1, weights, aux_skip=0.5)
    torch.testing.assert_close(out, torch.cat(nodes, dim=1))
    assert torch.count_nonzero(cell(s0, s1, weights)) == 0


# --- the α-gradient ---------------------------------------------------------------------------------------

def test_finite_difference_hvp_matches_exact_double_backward():
    darts, network, params, train, _, _ = _problem()
    meta = {k: v.detach().requires_grad_(True) for k, v in darts.alphas().items()}
    g = torch.Generator().manual_seed(1)
    vector = {k: torch.randn(v.shape, generator=g, dtype=v.dtype) for k, v in params.items()}
    leaves = {k: v.detach().requires_grad_(True) for k, v in params.items()}
    loss = _loss(darts, network, leaves, meta, train)
    grads = torch.autograd.grad(loss, list(leaves.values()), create_graph=True)
    directional = sum((gw * vector[k]).sum() for k, gw in zip(leaves, grads))
    exact = dict(zip(meta, torch.autograd.grad(directional, list(meta.values()))))
    # the reference code's radius 0.01 / ||v|| is far too coarse for this tiny batch-normalised network
    # (max abs error 27 against entries of 6); the formula is what is tested, at a radius where it converges
    approx = finite_difference_hvp(lambda p, m: _loss(darts, network, p, m, train), params, meta, vector, r=1e-5)
    for k in meta:
        assert exact[k].abs().max() > 1e-4  # a non-trivial product
        torch.testing.assert_close(approx[k], exact[k], rtol=1e-5, atol=1e-8)


def _reference_second_order(darts, network, params, train, val, buffers, lr, momentum, weight_decay):
    """∇α L_val(w'(α), α), w' = w - lr (momentum buf + ∇w L_train + wd w), written out in plain torch."""
    meta = {k: v.detach().requires_grad_(True) for k, v in darts.alphas().items()}
    leaves = {k: v.detach().requires_grad_(True) for k, v in params.items()}
    grads = torch.autograd.grad(_loss(darts, network, leaves, meta, train), list(leaves.values()), create_graph=True)
    virtual = {k: w - lr * (momentum * buffers[k] + g + weight_decay * w)
               for (k, w), g in zip(leaves.items(), grads)}
    return dict(zip(meta, torch.autograd.grad(_loss(darts, network, virtual, meta, val), list(meta.values()))))


@pytest.mark.parametrize("hessian, rtol", [("exact", 1e-10), ("finite_difference", 1e-4)])
def test_second_order_alpha_gradient_equals_a_float64_reference(hessian, rtol):
    darts, network, params, train, val, buffers = _problem()
    darts.hvp_eps = 1e-6
    lr, momentum, weight_decay = 0.1, 0.9, 3e-4
    reference = _reference_second_order(darts, network, params, train, val, buffers, lr, momentum, weight_decay)
    grads, _ = alpha_gradient(darts, network, params, train, val, lr, "second", hessian, momentum, weight_decay,
                              buffers, r=darts.hvp_eps)
    first, _ = alpha_gradient(darts, network, params, train, val, lr, "first")
    for k in reference:
        torch.testing.assert_close(grads[k], reference[k], rtol=rtol, atol=1e-9)
        assert (first[k] - reference[k]).abs().max() > 1e-3 * reference[k].abs().max()  # the virtual step matters


def test_second_order_alpha_gradient_equals_finite_differences_of_the_unrolled_loss():
    darts, network, params, train, val, buffers = _problem(seed=2)
    lr = 0.1
    grads, _ = alpha_gradient(darts, network, params, train, val, lr, "second", "exact", 0.9, 3e-4, buffers)

    def unrolled(meta):
        leaves = {k: v.detach().requires_grad_(True) for k, v in params.items()}
        gw = torch.autograd.grad(_loss(darts, network, leaves, meta, train), list(leaves.values()))
        virtual = {k: w.detach() - lr * (0.9 * buffers[k] + g + 3e-4 * w.detach()) for (k, w), g in
                   zip(leaves.items(), gw)}
        return _loss(darts, network, virtual, meta, val).item()

    alphas = {k: v.detach().clone() for k, v in darts.alphas().items()}
    eps = 1e-6
    for k, i in (("normal", 3), ("normal", 40), ("reduce", 7)):
        shifted = []
        for sign in (1.0, -1.0):
            value = alphas[k].clone()
            value.view(-1)[i] += sign * eps
            shifted.append({**alphas, k: value})
        fd = (unrolled(shifted[0]) - unrolled(shifted[1])) / (2 * eps)
        assert grads[k].view(-1)[i].item() == pytest.approx(fd, rel=1e-5, abs=1e-9)


def test_the_virtual_step_is_the_optimizer_slots_momentum_and_torch_sgd():
    g = torch.Generator().manual_seed(0)
    params = {"w": torch.randn(4, 3, generator=g, dtype=torch.float64), "b": torch.randn(3, generator=g,
                                                                                           dtype=torch.float64)}
    ours, filler = MomentumStep(0.1, 0.9, 3e-4), Momentum(lr=0.1, momentum=0.9, weight_decay=3e-4)
    leaves = [torch.nn.Parameter(v.clone()) for v in params.values()]
    sgd = torch.optim.SGD(leaves, lr=0.1, momentum=0.9, weight_decay=3e-4)
    a, sa, b, sb = params, ours.init(params), params, filler.init(params)
    for _ in range(3):
        grads = {k: torch.randn(v.shape, generator=g, dtype=v.dtype) for k, v in params.items()}
        a, sa = ours.update(grads, sa, a)
        b, sb = filler.update(grads, sb, b)
        for leaf, grad in zip(leaves, grads.values()):
            leaf.grad = grad.clone()
        sgd.step()
        for k, leaf in zip(params, leaves):
            torch.testing.assert_close(a[k], b[k], rtol=1e-12, atol=1e-14)
            torch.testing.assert_close(a[k], leaf.detach(), rtol=1e-12, atol=1e-14)


def test_check_filler_catches_an_architecture_that_ignores_meta():
    class _OwnAlphas(DARTS):
        def logits(self, network, params, x, meta=None, aux_skip=0.0):
            return super().logits(network, params, x, None, aux_skip)

    with pytest.raises(AssertionError, match="does not reach"):
        check_meta_gradient(lambda: _OwnAlphas(primitives="reduced", init_channels=2, layers=3))


# --- genotypes --------------------------------------------------------------------------------------------

def _check_derived(genotype: Genotype, steps: int = 4) -> None:
    for kind in ("normal", "reduce"):
        edges = getattr(genotype, kind)
        assert len(edges) == 2 * steps
        for node in range(steps):
            (op_a, a), (op_b, b) = edges[2 * node: 2 * node + 2]
            assert "none" not in (op_a, op_b)
            assert a != b and 0 <= a < node + 2 and 0 <= b < node + 2


@pytest.mark.parametrize("primitives", [PRIMITIVES, REDUCED_PRIMITIVES])
def test_genotypes_never_contain_none_and_have_two_distinct_inputs_per_node(primitives):
    g = torch.Generator().manual_seed(0)
    for trial in range(50):
        alphas = {k: torch.randn(14, len(primitives), generator=g) for k in ("normal", "reduce")}
        if trial % 2:  # `none` the strongest operation everywhere, as late in a collapsed search
            for v in alphas.values():
                v[:, 0] += 10.0
        _check_derived(derive_genotype(alphas, primitives))


def test_derivation_keeps_the_two_strongest_edges_with_their_strongest_operation():
    alphas = {k: torch.zeros(14, 8) for k in ("normal", "reduce")}
    normal = alphas["normal"]
    normal[0, 4], normal[1, 3] = 3.0, 1.0        # node 0: sep_conv_3x3 from 0, skip from 1
    normal[2:5, 0] = 9.0                          # node 1: `none` dominant everywhere, ignored for ranking
    normal[4, 6], normal[3, 5] = 2.0, 1.5         # node 1: dil_conv_3x3 from 2 (node 0), sep_conv_5x5 from 1
    genotype = derive_genotype(alphas, PRIMITIVES)
    assert genotype.normal[:4] == (("sep_conv_3x3", 0), ("skip_connect", 1), ("dil_conv_3x3", 2),
                                   ("sep_conv_5x5", 1))
    _check_derived(genotype)


def test_genotype_yaml_round_trip_and_png(tmp_path):
    genotype = derive_genotype({k: torch.randn(14, 8, generator=torch.Generator().manual_seed(1))
                                for k in ("normal", "reduce")}, PRIMITIVES)
    path = save_genotype(genotype, tmp_path / "cell.yaml")
    assert load_genotype(path) == genotype
    assert GenotypeCell(str(path)).genotype() == genotype
    png = plot_cell(genotype, "normal", tmp_path / "normal.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("data, match", [
    ({"normal": [["none", 0], ["sep_conv_3x3", 1]], "reduce": [["sep_conv_3x3", 0], ["sep_conv_3x3", 1]]}, "none"),
    ({"normal": [["sep_conv_3x3", 0], ["sep_conv_3x3", 2]], "reduce": [["sep_conv_3x3", 0], ["sep_conv_3x3", 1]]},
     "reads input 2"),
    ({"normal": [["sep_conv_3x3", 0]], "reduce": [["sep_conv_3x3", 0], ["sep_conv_3x3", 1]]}, "two per"),
    ({"normal": [["conv_7x7", 0], ["sep_conv_3x3", 1]], "reduce": [["sep_conv_3x3", 0], ["sep_conv_3x3", 1]]},
     "conv_7x7"),
    ({"normal": []}, "mapping with"),
])
def test_bad_genotypes_are_refused_with_a_reason(data, match):
    with pytest.raises(ConfigError, match=match):
        Genotype.from_dict(data)


def test_random_cells_are_seeded_and_from_the_space():
    a, b, c = RandomCell(seed=1).genotype(), RandomCell(seed=1).genotype(), RandomCell(seed=2).genotype()
    assert a == b and a != c
    for seed in range(20):
        _check_derived(RandomCell(seed=seed).genotype())


# --- collapse diagnostics and remedies ----------------------------------------------------------------------

def test_hessian_eigenvalue_is_the_dominant_eigenvalue():
    g = torch.Generator().manual_seed(0)
    q = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=torch.float64))[0]
    matrix = q @ torch.diag(torch.tensor([5.0, -1.0, 2.0, 0.5, 0.1, 3.0], dtype=torch.float64)) @ q.T
    value = hessian_eigenvalue(lambda m: 0.5 * m["a"] @ matrix @ m["a"] + torch.sin(m["b"]).sum() * 0,
                               {"a": torch.randn(6, generator=g, dtype=torch.float64),
                                "b": torch.zeros(2, dtype=torch.float64)}, iterations=500, tol=1e-12)
    assert value == pytest.approx(5.0, rel=1e-6)


@pytest.mark.slow  # power iteration needs ~150 Hessian-vector products here (eigenvalues 0.241 and -0.223)
def test_hessian_eigenvalue_on_a_supernet_matches_the_full_hessian():
    darts = _tiny(steps=2, multiplier=2).double()
    network = darts.build_network((1, 8, 8), 3).double()
    params = {k: v.detach() for k, v in network.named_parameters()}
    g = torch.Generator().manual_seed(0)
    val = (torch.randn(4, 1, 8, 8, generator=g, dtype=torch.float64), torch.randint(0, 3, (4,), generator=g))
    alphas = {k: v.detach() for k, v in darts.alphas().items()}
    flat = torch.cat([alphas["normal"].flatten(), alphas["reduce"].flatten()])
    n = alphas["normal"].numel()

    def loss_of(vector):
        return _loss(darts, network, params, {"normal": vector[:n].view(5, 5), "reduce": vector[n:].view(5, 5)},
                     val)

    hessian = torch.autograd.functional.hessian(loss_of, flat)
    eigenvalues = torch.linalg.eigvalsh(hessian)
    dominant = eigenvalues[eigenvalues.abs().argmax()].item()
    value = hessian_eigenvalue(lambda m: _loss(darts, network, params, m, val), alphas, iterations=400, tol=1e-9)
    assert value == pytest.approx(dominant, rel=1e-4)


def test_parameter_free_operations_are_counted():
    genotype = Genotype((("skip_connect", 0), ("max_pool_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 2)) * 2,
                        (("sep_conv_3x3", 0), ("sep_conv_3x3", 1)) * 4)
    assert genotype.parameter_free("normal") == 6 and genotype.count("normal", {"skip_connect"}) == 4
    assert genotype.parameter_free("reduce") == 0


def _images(n: int = 16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 3, (n,), generator=g)


def _collapsing(remedy: str) -> DARTS:
    """A search whose normal cell has exactly two skip connections (node 0's edges) and α nearly frozen."""
    darts = _tiny(order="first", remedy=remedy, epochs=3, arch_lr=1e-6)
    with torch.no_grad():
        darts.normal[:, REDUCED_PRIMITIVES.index("sep_conv_3x3")] = 3.0
        darts.normal[:2, REDUCED_PRIMITIVES.index("skip_connect")] = 5.0
    return darts


def test_early_stop_ends_the_search_at_two_skip_connections():
    x, y = _images()
    result = search(_collapsing("early_stop"), x, y, steps_per_epoch=1, eigenvalue_batches=0)
    assert result.stopped_early and len(result.history) == 1
    assert result.history[0]["skip_connect"] == 2 and result.history[0]["parameter_free"] == 2
    result = search(_collapsing("none"), x, y, steps_per_epoch=1, eigenvalue_batches=0)
    assert not result.stopped_early and len(result.history) == 3


@pytest.mark.parametrize("order, hessian, remedy", [("second", "finite_difference", "aux_skip"),
                                                    ("second", "exact", "none"), ("first", "exact", "none")])
def test_search_learns_alpha_and_reports_the_diagnostics(order, hessian, remedy):
    x, y = _images()
    darts = _tiny(order=order, hessian=hessian, remedy=remedy, epochs=2)
    before = darts.normal.detach().clone()
    seen = []
    result = search(darts, x, y, steps_per_epoch=1, eigenvalue_iterations=3, log=seen.append)
    assert not torch.equal(before, darts.normal.detach())
    assert len(result.history) == 2 and seen == result.history and result.steps == 2
    entry = result.history[-1]
    assert {"train_loss", "val_loss", "val_accuracy", "parameter_free", "skip_connect", "eigenvalue",
            "genotype", "cpu_s", "lr"} <= set(entry)
    assert isinstance(entry["eigenvalue"], float) and entry["lr"] < darts.lr
    _check_derived(result.genotype)
    assert Genotype.from_dict(entry["genotype"]) == result.genotype == darts.genotype()


def test_search_is_deterministic_for_a_seed():
    x, y = _images()
    runs = []
    for _ in range(2):
        darts = _tiny(order="second", epochs=1)
        search(darts, x, y, steps_per_epoch=2, eigenvalue_batches=0)
        runs.append(darts.normal.detach().clone())
    assert torch.equal(*runs)


# --- retraining and bad input -------------------------------------------------------------------------------

def test_retraining_uses_one_protocol_for_every_filler():
    x, y = _images(32)
    conv4 = build_filler("architecture", {"name": "conv4", "hidden": 4, "blocks": 2})
    for filler in (_tiny(), RandomCell(seed=0, init_channels=2, layers=3), conv4):
        out = train_network(filler, x, y, x[:8], y[:8], epochs=1, batch_size=8, max_steps=2)
        assert out["steps"] == 2 and 0 <= out["test_accuracy"] <= 1 and out["parameters"] > 0


@pytest.mark.parametrize("kwargs, match", [
    ({"primitives": "tiny"}, "primitives"), ({"primitives": ["none"]}, "primitives"),
    ({"init_channels": 3}, "even"), ({"order": "third"}, "order"), ({"hessian": "bfgs"}, "hessian"),
    ({"remedy": "pray"}, "remedy"), ({"arch_lr": -1.0}, "arch_lr"), ({"momentum": 1.0}, "momentum"),
    ({"multiplier": 5}, "multiplier"), ({"layers": 0}, "layers"), ({"hvp_eps": 0.0}, "hvp_eps"),
])
def test_bad_darts_arguments_say_what_and_how(kwargs, match):
    with pytest.raises(ConfigError, match=match) as info:
        DARTS(**kwargs)
    assert isinstance(info.value, AutometaError) and isinstance(info.value, ValueError)


def test_bad_search_input_is_refused():
    with pytest.raises(ConfigError, match="two halves"):
        search(_tiny(batch_size=16), *_images(16))
    with pytest.raises(ConfigError, match="images"):
        search(_tiny(), torch.randn(16, 64), torch.zeros(16, dtype=torch.long))
    with pytest.raises(ConfigError, match="Unknown architecture filler"):
        build_filler("architecture", "dart")


# --- the smoke tier: `autometa run` on an architecture study -------------------------------------------------

def test_smoke_autometa_run_searches_retrains_and_tests_on_fashion_mnist(tmp_path):
    from autometa.experiment import run_experiment

    results = run_experiment("experiments/darts_fashion_mnist_smoke.yaml", tmp_path / "run")
    assert results["search"]["steps"] == 2 and results["retrain"]["steps"] == 2
    assert results["test"]["accuracy"]["n"] == 100 and 0 <= results["test"]["accuracy"]["mean"] <= 1
    for name in ("results.json", "metrics.jsonl", "genotype.yaml", "normal.png", "reduce.png", "alphas.pt",
                 "config.yaml"):
        assert (tmp_path / "run" / name).is_file(), name
    _check_derived(load_genotype(tmp_path / "run" / "genotype.yaml"))
    phases = [line.split('"phase": "')[1].split('"')[0] for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert phases == ["search", "retrain"]


def test_architecture_configs_are_validated_as_a_whole(tmp_path):
    from autometa.experiment._architecture import load_architecture_config

    with pytest.raises(ConfigError) as info:
        load_architecture_config({"kind": "architecture", "data": {"name": "cifar", "search_image": 10},
                                  "architecture": {"name": "darts", "order": "third"}, "retrain": {"epoch": 1}})
    message = str(info.value)
    for part in ("data.name", "search_image", "did you mean 'search_images'", "order", "retrain.epoch"):
        assert part in message
    for order in ("first", "second"):
        load_architecture_config(f"experiments/darts_fashion_mnist_{order}_order.yaml")


@pytest.mark.parametrize("learner", [{"name": "protonet"}, {"name": "maml", "inner_lr": 0.4, "inner_steps": 1}])
def test_a_cell_is_the_network_of_a_few_shot_learner(learner):
    """`model: {architecture: ...}` puts a filler's network under ProtoNet (embedding) or MAML (with a head)."""
    from autometa.experiment import build_experiment, load_config

    config = load_config({"tasks": {"name": "omniglot", "ways": 3, "shots": 1, "queries": 2},
                          "model": {"architecture": {"name": "sep_conv_cell", "init_channels": 2, "layers": 3}},
                          "learner": learner, "run": {"validate_every": 0}})
    experiment = build_experiment(config)
    network = experiment.learner.model
    assert network.cells[0].ops[1].__class__.__name__ == "SepConv" and len(network.cells) == 3
    assert isinstance(network.head, torch.nn.Identity) == (learner["name"] == "protonet")
    batch = next(iter(experiment.train.episodes(2, 2, seed=0)))
    metrics = experiment.learner.meta_backward(batch)
    assert all(p.grad is not None for p in network.parameters())
    assert metrics["loss"] > 0
    with pytest.raises(ConfigError, match="drop the other model keys"):
        build_experiment({**config, "model": {"name": "conv4", "architecture": {"name": "conv4"}}})


def test_a_supernet_without_normal_cells_gives_zero_normal_gradients():
    """layers=2: both cells reduce, so α of the normal cell is unused; gradients are zeros, not an error."""
    darts, x, y = _tiny(layers=2).double(), *_images(8)
    network = darts.build_network((1, 8, 8), 3).double()
    params = {k: v.detach() for k, v in network.named_parameters()}
    batch = (x[:4].double(), y[:4])
    for order, hessian in (("first", "exact"), ("second", "exact"), ("second", "finite_difference")):
        grads, _ = alpha_gradient(darts, network, params, batch, batch, 0.1, order, hessian)
        assert torch.count_nonzero(grads["normal"]) == 0 and torch.count_nonzero(grads["reduce"]) > 0
    value = hessian_eigenvalue(lambda m: _loss(darts, network, params, m, batch), darts.alphas(), iterations=3)
    assert value != 0.0
