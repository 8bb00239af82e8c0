"""``check_filler``: the conformance suite every filler passes, shipped with the package.

A filler written outside autometa is checked by one call, the way Optuna ships its sampler tests::

    from autometa.testing import check_filler
    check_filler(lambda: ClippedSGD(lr=0.1, max_norm=1.0), reference=my_plain_torch_step)

What it checks (each failure raises ``AssertionError`` naming the check and the numbers):

1. it is a :class:`~autometa.slots.Filler` of a known slot, rebuildable from ``config()`` by
   :func:`~autometa.slots.build_filler` when registered, and deterministic for a seed;
2. a hand-crafted filler equals its plain-torch equivalent step for step (``reference``);
3. its pure method does not modify its inputs in place;
4. a learned filler's meta-gradient (second order, through MAML's inner loop on a tiny float64
   problem; for the data slot, through two SGD steps of a linear model trained on the support set)
   equals a central finite difference; a data filler is first fitted on a tiny float64 set of 8x8
   images of 3 classes, so give its factory a tiny budget (``iterations=2, net={"width": 4}``);
5. save, reload and resume: its ``state_dict`` round-trips through ``torch.save`` /
   ``torch.load(weights_only=True)``, and an optimizer's state saved mid-trajectory resumes to the
   uninterrupted result;
6. its ``space()`` is accepted by every search backend that is installed (optuna and nni by default;
   ray on request, it takes seconds to start).
"""

from __future__ import annotations

import copy
import io
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from autometa.hypergrad import Unrolled
from autometa.learners import MAML
from autometa.learners._reward import Batch, lirpg_problem
from autometa.learners._weighting import lookahead_problem
from autometa.slots import FILLERS, Filler, build_filler

Factory = Callable[[], Filler]


def _compare_with_finite_differences(objective: Callable[[], Tensor], meta: dict[str, Tensor], names,
                                     generator: torch.Generator, eps: float, probes: int) -> None:
    """The autograd gradient of ``objective()`` with respect to ``meta[name]`` equals a central finite
    difference at ``probes`` random coordinates of each name (float64)."""
    names = list(names)
    grads = torch.autograd.grad(objective(), [meta[k] for k in names], allow_unused=True)
    for name, grad in zip(names, grads):
        if grad is None:
            raise AssertionError(f"the meta-gradient does not reach {name}: the filler must compute with the "
                                 f"meta-parameters passed in `meta`, not with its own attributes")
        flat = meta[name].detach().view(-1)
        for i in torch.randperm(flat.numel(), generator=generator)[:probes].tolist():
            original = flat[i].item()
            with torch.no_grad():
                flat[i] = original + eps
                plus = objective().item()
                flat[i] = original - eps
                minus = objective().item()
                flat[i] = original
            fd = torch.tensor((plus - minus) / (2 * eps), dtype=torch.float64)
            _close(grad.view(-1)[i], fd, f"meta-gradient of {name}[{i}] vs finite difference", rtol=1e-4, atol=1e-7)


def _params(seed: int, dtype=torch.float64) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"w": torch.randn(5, 3, generator=g, dtype=dtype), "b": torch.randn(5, generator=g, dtype=dtype)}


def _grads(seed: int, dtype=torch.float64) -> dict[str, Tensor]:
    return _params(seed + 100, dtype)


def _net(seed: int, outputs: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, outputs)).double()


def _fresh(factory: Factory | Filler) -> Filler:
    return copy.deepcopy(factory) if isinstance(factory, Filler) else factory()


def _close(a: Tensor, b: Tensor, what: str, rtol: float = 1e-6, atol: float = 1e-9) -> None:
    if not torch.allclose(a, b, rtol=rtol, atol=atol):
        raise AssertionError(f"{what}: max abs difference {(a - b).abs().max().item():.3g} "
                             f"(rtol {rtol}, atol {atol})")


def _outputs(filler: Filler, seed: int) -> list[Tensor]:
    """What the filler computes on fixed inputs (three optimizer steps, or a loss)."""
    if filler.slot == "optimizer":
        params = _params(seed)
        _build(filler, params)
        state = filler.init(params)
        out = []
        for t in range(3):
            params, state = filler.update(_grads(seed + t), state, params)
            out += [v.detach() for v in params.values()]
        return out
    if filler.slot == "loss":
        outputs, targets = _loss_inputs(filler, seed)
        return [filler.loss(outputs, targets).detach()]
    if filler.slot == "weighting":
        losses, outputs, targets = _weighting_inputs(seed)
        filler.double()
        meta = {**filler.meta_params(), **filler.batch_meta(len(losses), losses.dtype)} or None
        return [filler.weighting(losses, outputs, targets, meta).detach()]
    if filler.slot == "reward":
        filler.double()
        return [filler.reward(*_reward_inputs(filler, seed)).detach()]
    if filler.slot == "architecture":
        network, params, x, _ = _architecture_inputs(filler, seed)
        return [filler.logits(network, params, x).detach()]
    if filler.slot == "augmentation":
        filler.double()
        x, y = _augmentation_inputs(seed)
        out_x, out_y = filler.augment(x, y, None, torch.Generator().manual_seed(seed))
        return [out_x.detach(), out_y.detach()]
    if filler.slot == "data":
        x, y = _fitted_support(filler, seed)
        return [x.detach(), y.detach()] + ([filler.step_sizes().detach()] if filler.step_sizes() is not None else [])
    raise AssertionError(f"check_filler does not know the slot {filler.slot!r} yet; known: {list(FILLERS)}")


def _kind(filler: Filler) -> str:
    kinds = getattr(filler, "KINDS", ("classification",))
    return "classification" if "classification" in kinds else kinds[0]


def _loss_inputs(filler: Filler, seed: int):
    g = torch.Generator().manual_seed(seed)
    outputs = torch.randn(6, 4, generator=g, dtype=torch.float64)
    if _kind(filler) == "classification":
        return outputs, torch.randint(0, 4, (6,), generator=g)
    return outputs, torch.randn(6, 4, generator=g, dtype=torch.float64)


# --- architecture slot: a network for 8x8 one-channel images of 3 classes, in float64 ---------------------

def _architecture_inputs(filler: Filler, seed: int):
    """``(network, weights, images, labels)`` for an architecture filler (the filler is made float64)."""
    filler.double()
    network = filler.build_network((1, 8, 8), 3, seed=seed).double()
    g = torch.Generator().manual_seed(seed)
    params = {k: v.detach() for k, v in network.named_parameters()}
    return network, params, torch.randn(6, 1, 8, 8, generator=g, dtype=torch.float64), torch.randint(0, 3, (6,),
                                                                                                      generator=g)


def _check_architecture_meta_gradient(filler: Filler, seed: int, eps: float, probes: int) -> None:
    """The α-gradient through one virtual weight step (``filler.inner_problem``, differentiated by
    :class:`~autometa.hypergrad.Unrolled`) equals a central finite difference in float64."""
    from autometa.hypergrad import Unrolled

    network, params, x, y = _architecture_inputs(filler, seed)
    meta = {k: v.detach().clone().requires_grad_(True) for k, v in filler.meta_params().items()}
    if not meta:
        return
    problem = filler.inner_problem(network, params, (x[:3], y[:3]), (x[3:], y[3:]), lr=0.1)

    def outer_loss() -> Tensor:
        return Unrolled()(problem, meta)[0]

    g = torch.Generator().manual_seed(seed)
    _compare_with_finite_differences(outer_loss, meta, list(meta), g, eps, probes)


# --- data slot: a tiny float64 training set of 8x8 one-channel images of 3 classes -------------------------

def _data_inputs(seed: int):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(3).repeat_interleave(6)
    x = torch.randn(18, 1, 8, 8, generator=g, dtype=torch.float64) + y.view(-1, 1, 1, 1).double()
    return x, y


def _fitted_support(filler: Filler, seed: int):
    """The support set of a data filler, fitted first on the tiny set unless it is fitted (loaded) already."""
    filler.double()
    if not filler.fitted:
        filler.fit(*_data_inputs(seed))
    return filler.support()


def _check_data_meta_gradient(filler: Filler, seed: int, eps: float, probes: int) -> None:
    """The gradient of the real-data loss after two SGD steps of a linear model on the support set (with the
    filler's learned step sizes, if any) with respect to ω equals a central finite difference in float64."""
    _fitted_support(filler, seed)
    meta = {k: v.detach().clone().requires_grad_(True) for k, v in filler.meta_params().items()}
    if not meta:
        return
    x_real, y_real = _data_inputs(seed + 1)
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 3)).double()

    @torch.enable_grad()  # the finite differences call it under no_grad; the inner steps need gradients
    def real_loss() -> Tensor:
        x, y = filler.support(meta)
        lrs = filler.step_sizes(meta)
        params = dict(net.named_parameters())
        for lr in ([0.1, 0.1] if lrs is None else list(lrs[:2])):
            loss = nn.functional.cross_entropy(torch.func.functional_call(net, params, (x,)), y)
            grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
            params = {k: v - lr * g for (k, v), g in zip(params.items(), grads)}
        return nn.functional.cross_entropy(torch.func.functional_call(net, params, (x_real,)), y_real)

    g = torch.Generator().manual_seed(seed)
    _compare_with_finite_differences(real_loss, meta, list(meta), g, eps, probes)

# ---------------------------------------------------------------------------------------------------------


def _build(filler: Filler, params: dict[str, Tensor]) -> None:
    if hasattr(filler, "build"):
        filler.build(params)
    filler.double()


def check_determinism_and_config(factory: Factory | Filler, seed: int = 0) -> None:
    """Check 1: a Filler of a known slot, rebuildable from its config, equal outputs for equal seeds."""
    filler = _fresh(factory)
    if not isinstance(filler, Filler):
        raise AssertionError(f"check_filler needs a Filler; got {type(filler).__name__}")
    if filler.slot not in FILLERS:
        raise AssertionError(f"{type(filler).__name__}.slot is {filler.slot!r}; known slots: {list(FILLERS)}")
    torch.manual_seed(seed)
    first = _outputs(_fresh(factory), seed)
    torch.manual_seed(seed)
    second = _outputs(_fresh(factory), seed)
    for a, b in zip(first, second):
        if not torch.equal(a, b):
            raise AssertionError(f"{type(filler).__name__} is not deterministic: two fresh fillers built under the "
                                 f"same seed compute different results")
    config = filler.config()
    if config.get("name") in FILLERS[filler.slot] and FILLERS[filler.slot][config["name"]] is type(filler):
        rebuilt = build_filler(filler.slot, config)
        if type(rebuilt) is not type(filler):
            raise AssertionError(f"build_filler({config}) gave a {type(rebuilt).__name__}")


def check_reference(factory: Factory | Filler, reference: Callable, steps: int = 5, seed: int = 0) -> None:
    """Check 2: the filler equals ``reference`` step by step.

    For an optimizer, ``reference(params: list[nn.Parameter]) -> torch.optim.Optimizer`` (e.g.
    ``lambda ps: torch.optim.Adam(ps, lr=0.1)``) or ``reference(grads, state, params) -> (params,
    state)`` in plain torch; for a loss, ``reference(outputs, targets) -> per-sample losses``.
    """
    filler = _fresh(factory)
    if filler.slot == "loss":
        outputs, targets = _loss_inputs(filler, seed)
        _close(filler.loss(outputs, targets), reference(outputs, targets), f"{type(filler).__name__} vs reference",
               rtol=1e-10, atol=1e-12)
        return
    params = _params(seed)
    _build(filler, params)
    state = filler.init(params)
    leaves = [nn.Parameter(v.clone()) for v in params.values()]
    optimizer = None
    try:
        optimizer = reference(leaves)
    except TypeError:
        optimizer = None
    plain_state: dict = {}
    plain = {k: v.clone() for k, v in params.items()}
    for t in range(steps):
        grads = _grads(seed + t)
        params, state = filler.update(grads, state, params)
        if isinstance(optimizer, torch.optim.Optimizer):
            for leaf, g in zip(leaves, grads.values()):
                leaf.grad = g.clone()
            optimizer.step()
            expected = {k: leaf.detach() for k, leaf in zip(params, leaves)}
        else:
            plain, plain_state = reference(grads, plain_state, plain)
            expected = plain
        for k in params:
            _close(params[k].detach(), expected[k].detach(), f"{type(filler).__name__} vs reference at step {t + 1}, "
                   f"parameter {k!r}", rtol=1e-10, atol=1e-12)


def check_pure(factory: Factory | Filler, seed: int = 0) -> None:
    """Check 3: inputs are not modified in place."""
    filler = _fresh(factory)
    if filler.slot == "optimizer":
        params, grads = _params(seed), _grads(seed)
        _build(filler, params)
        state = filler.init(params)
        before = [v.clone() for v in (*params.values(), *grads.values(), *state.values())]
        filler.update(grads, state, params)
        after = (*params.values(), *grads.values(), *state.values())
    elif filler.slot == "reward":
        filler.double()
        inputs = _reward_inputs(filler, seed)
        before = [t.clone() for t in inputs]
        filler.reward(*inputs)
        after = inputs
    elif filler.slot == "weighting":
        inputs = _weighting_inputs(seed)
        filler.double()
        before = [t.clone() for t in inputs]
        filler.weighting(*inputs)
        after = inputs
    elif filler.slot == "architecture":
        network, params, x, _ = _architecture_inputs(filler, seed)
        meta = {k: v.detach().clone() for k, v in filler.meta_params().items()}
        before = [v.clone() for v in (*params.values(), x, *meta.values())]
        filler.logits(network, params, x, meta or None)
        after = (*params.values(), x, *meta.values())
    elif filler.slot == "augmentation":
        filler.double()
        x, y = _augmentation_inputs(seed)
        meta = {k: v.detach().clone() for k, v in filler.meta_params().items()}
        before = [v.clone() for v in (x, y, *meta.values())]
        filler.augment(x, y, meta or None, torch.Generator().manual_seed(seed))
        after = (x, y, *meta.values())
    elif filler.slot == "data":
        x, y = _data_inputs(seed)
        filler.double()
        before = [x.clone(), y.clone()]
        filler.fit(x, y)
        meta = {k: v.detach().clone() for k, v in filler.meta_params().items()}
        before += [v.clone() for v in meta.values()]
        filler.support(meta or None)
        after = (x, y, *meta.values())  # fit and support leave the training set and ω as they were
    else:
        outputs, targets = _loss_inputs(filler, seed)
        before = [outputs.clone(), targets.clone()]
        filler.loss(outputs, targets)
        after = (outputs, targets)
    for a, b in zip(before, after):
        if not torch.equal(a, b):
            raise AssertionError(f"{type(filler).__name__} modified an input in place; compute out of place")


def check_meta_gradient(factory: Factory | Filler, seed: int = 0, eps: float = 1e-6, probes: int = 4) -> None:
    """Check 4: for a learned filler, MAML's second-order meta-gradient with respect to the filler's ω
    equals a central finite difference in float64 (``probes`` coordinates)."""
    filler = _fresh(factory)
    slot = filler.slot
    if slot == "weighting":
        return _check_weighting_meta_gradient(filler, seed, eps, probes)
    if slot == "reward":
        return _check_reward_meta_gradient(filler, seed, eps, probes)
    if slot == "architecture":
        return _check_architecture_meta_gradient(filler, seed, eps, probes)
    if slot == "augmentation":
        return _check_augmentation_meta_gradient(filler, seed, eps, probes)
    if slot == "data":
        return _check_data_meta_gradient(filler, seed, eps, probes)
    kind = _kind(filler) if slot == "loss" else "regression"
    outputs = 4 if kind == "classification" else 1
    learner = MAML(_net(seed, outputs), task=kind, inner_steps=2, batching="loop",
                   **{slot: filler}, **({} if slot == "optimizer" else {"inner_lr": 0.1}))
    learner.double()
    # copies, as functional transforms pass them: a filler must read ω from ``meta``, not from itself
    meta = {k: v.detach().clone().requires_grad_(v.requires_grad) for k, v in learner.meta_params().items()}
    learned = [k for k, v in meta.items() if k.startswith(slot + ".") and v.requires_grad]
    if not learned:
        return  # a fixed rule: nothing to differentiate
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 10, 3, generator=g, dtype=torch.float64)
    y = (torch.randint(0, outputs, (2, 10), generator=g) if kind == "classification"
         else torch.randn(2, 10, 1, generator=g, dtype=torch.float64))
    batch = (x[:, :5], y[:, :5], x[:, 5:], y[:, 5:])

    def query_loss() -> Tensor:
        return sum(learner.task_loss(meta, *(t[i] for t in batch), training=True)[0] for i in range(2)) / 2

    _compare_with_finite_differences(query_loss, meta, learned, g, eps, probes)


# --- the weighting slot: fixed inputs and the meta-gradient through a one-step look-ahead -------------

def _weighting_inputs(seed: int):
    g = torch.Generator().manual_seed(seed)
    outputs = torch.randn(6, 4, generator=g, dtype=torch.float64)
    targets = torch.randint(0, 4, (6,), generator=g)
    losses = torch.nn.functional.cross_entropy(outputs, targets, reduction="none")
    return losses, outputs, targets


def _check_weighting_meta_gradient(filler: Filler, seed: int, eps: float, probes: int) -> None:
    """The meta-gradient of the clean loss after a one-step look-ahead (persistent and per-batch ω)
    equals a central finite difference in float64."""
    from autometa.slots.loss import CrossEntropy

    filler.double()
    model = _net(seed, 4)
    params = dict(model.named_parameters())
    g = torch.Generator().manual_seed(seed)
    x, x_clean = (torch.randn(n, 3, generator=g, dtype=torch.float64) for n in (10, 6))
    y, y_clean = (torch.randint(0, 4, (n,), generator=g) for n in (10, 6))
    meta = {k: v.detach().clone().requires_grad_(True)
            for k, v in {**filler.meta_params(), **filler.batch_meta(10, torch.float64)}.items()}
    if not meta:
        return  # a fixed rule: nothing to differentiate
    problem = lookahead_problem(model, params, filler, CrossEntropy(), x, y, x_clean, y_clean, lr=0.5)

    def clean_loss() -> Tensor:
        return Unrolled()(problem, meta)[0]

    _compare_with_finite_differences(clean_loss, meta, list(meta), g, eps, probes)


# --- the reward slot: fixed trajectories and the meta-gradient through LIRPG's policy step -----------

def _reward_inputs(filler: Filler, seed: int, steps: int = 12):
    g = torch.Generator().manual_seed(seed)
    dim, actions = getattr(filler, "observation_dim", 4), getattr(filler, "num_actions", 2)
    observations = torch.randn(steps, dim, generator=g, dtype=torch.float64)
    return (observations, torch.randint(0, actions, (steps,), generator=g),
            (torch.rand(steps, generator=g, dtype=torch.float64) > 0.7).double())


def _check_reward_meta_gradient(filler: Filler, seed: int, eps: float, probes: int) -> None:
    """The meta-gradient of the extrinsic objective after one policy-gradient step on the mixed reward
    equals a central finite difference in float64."""
    filler.double()
    meta = {k: v.detach().clone().requires_grad_(True) for k, v in filler.meta_params().items()}
    if not meta:
        return  # a fixed rule: nothing to differentiate
    observations, actions, extrinsic = _reward_inputs(filler, seed)
    torch.manual_seed(seed)
    policy = nn.Linear(observations.shape[1], getattr(filler, "num_actions", 2)).double()
    dones = torch.zeros(len(actions), dtype=torch.bool)
    dones[[5, -1]] = True
    batch = Batch(observations, actions, extrinsic, dones, torch.zeros(2))
    problem = lirpg_problem(policy, dict(policy.named_parameters()), filler, batch, lr=0.5, gamma=0.9)

    def objective() -> Tensor:
        return Unrolled()(problem, meta)[0]

    g = torch.Generator().manual_seed(seed)
    _compare_with_finite_differences(objective, meta, list(meta), g, eps, probes)


# --- the augmentation slot: 16x16 grey images and the meta-gradient through MAML's support augmentation ---

def _augmentation_inputs(seed: int):
    """Six 16x16 one-channel float64 images in [0, 1] (a bright blob on a dark background) and labels."""
    g = torch.Generator().manual_seed(seed)
    rows = torch.arange(16, dtype=torch.float64)
    centre = torch.rand(6, 2, generator=g, dtype=torch.float64) * 8 + 4
    dy2 = (rows.view(1, -1, 1) - centre[:, :1, None]) ** 2
    dx2 = (rows.view(1, 1, -1) - centre[:, 1:, None]) ** 2
    blob = torch.exp(-(dy2 + dx2) / 8.0)
    x = (0.8 * blob + 0.2 * torch.rand(6, 16, 16, generator=g, dtype=torch.float64)).clamp(0, 1).unsqueeze(1)
    return x, torch.randint(0, 3, (6,), generator=g)


def _check_augmentation_meta_gradient(filler: Filler, seed: int, eps: float, probes: int) -> None:
    """Through MAML's inner loop on an augmented support set (float64): the meta-gradient of every learned
    ω reaches it, finite; for the names in ``filler.exact_meta`` (those whose gradient is the derivative of
    the forward computation, not a relaxation) it equals a central finite difference."""
    filler.double()
    if not filler.meta_params():
        return  # a fixed rule: nothing to differentiate
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(256, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    learner = MAML(net, inner_lr=0.5, inner_steps=1, batching="loop", augmentation=filler)
    learner.double()
    meta = {k: v.detach().clone().requires_grad_(v.requires_grad) for k, v in learner.meta_params().items()}
    learned = [k for k, v in meta.items() if k.startswith("augmentation.") and v.requires_grad]
    x, y = _augmentation_inputs(seed)
    q, qy = _augmentation_inputs(seed + 1)

    def query_loss() -> Tensor:
        return learner.task_loss(meta, x, y, q, qy, training=True)[0]

    grads = torch.autograd.grad(query_loss(), [meta[k] for k in learned], allow_unused=True)
    for name, grad in zip(learned, grads):
        if grad is None or not torch.isfinite(grad).all() or not grad.abs().sum() > 0:
            raise AssertionError(f"the meta-gradient does not reach {name} (got {grad!r}): the filler must compute "
                                 f"the augmented images from the meta-parameters passed in `meta`")
    exact = [f"augmentation.{k}" for k in getattr(filler, "exact_meta", [k.split(".", 1)[1] for k in learned])]
    exact = [k for k in exact if k in learned]
    if exact:
        _compare_with_finite_differences(query_loss, meta, exact, torch.Generator().manual_seed(seed), eps, probes)


def check_save_and_resume(factory: Factory | Filler, seed: int = 0) -> None:
    """Check 5: weights round-trip through ``torch.save``/``torch.load(weights_only=True)``; an optimizer's
    state saved after one step resumes to the uninterrupted result."""
    filler = _fresh(factory)
    if filler.slot == "optimizer":
        _build(filler, _params(seed))
    if filler.slot == "data":  # the set lives in the state_dict; a fresh copy takes it from there, unfitted
        _fitted_support(filler, seed)
    with torch.no_grad():
        for p in filler.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(seed), dtype=p.dtype))
    buffer = io.BytesIO()
    torch.save(filler.state_dict(), buffer)
    buffer.seek(0)
    copy_ = _fresh(factory)
    if copy_.slot == "optimizer":
        _build(copy_, _params(seed))
    copy_.load_state_dict(torch.load(buffer, weights_only=True))
    for a, b in zip(_outputs(filler, seed), _outputs(copy_, seed)):
        if not torch.equal(a, b):
            raise AssertionError(f"{type(filler).__name__} computes something else after save and reload")
    if filler.slot != "optimizer":
        return
    params = _params(seed)
    state = filler.init(params)
    params, state = filler.update(_grads(seed), state, params)
    buffer = io.BytesIO()
    torch.save({"params": params, "state": state}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    uninterrupted, _ = filler.update(_grads(seed + 1), state, params)
    resumed, _ = copy_.update(_grads(seed + 1), saved["state"], saved["params"])
    for k in uninterrupted:
        if not torch.equal(uninterrupted[k], resumed[k]):
            raise AssertionError(f"{type(filler).__name__}: resuming from a saved state differs from the "
                                 f"uninterrupted run for parameter {k!r}")


def check_space(factory: Factory | Filler, backends: Sequence[str] = ("optuna", "nni")) -> None:
    """Check 6: the filler's ``space()``, prefixed by its slot, runs two trials on each backend."""
    import autometa.search as search_api  # the search layer is only needed for this check

    filler = _fresh(factory)
    raw = {f"{filler.slot}.{k}": v for k, v in filler.space().items()}
    if not raw:
        return
    space = search_api.parse_space(raw)
    for backend in backends:
        result = search_api.search(lambda trial: 0.0, space, backend=backend, n_trials=2, seed=0)
        for record in result.trials:
            space.check_values(record.params)


def check_filler(factory: Factory | Filler, reference: Callable | None = None,
                 backends: Sequence[str] = ("optuna", "nni"), seed: int = 0) -> None:
    """Run every check of this module on a filler; raise ``AssertionError`` at the first failure.

    Args:
        factory: a zero-argument callable building a fresh filler, or a filler (deep-copied).
        reference: the plain-torch equivalent of a hand-crafted filler (see :func:`check_reference`).
        backends: search backends whose acceptance of ``space()`` is checked (installed ones).
        seed: seeds the inputs.
    """
    check_determinism_and_config(factory, seed)
    if reference is not None:
        check_reference(factory, reference, seed=seed)
    check_pure(factory, seed)
    check_meta_gradient(factory, seed)
    check_save_and_resume(factory, seed)
    check_space(factory, backends)
