"""The DARTS bilevel search: α on one half of the training set, the weights on the other.

The α-gradient is the gradient of the validation loss after one *virtual* step of the weights::

    w' = w - ξ (momentum * buf + ∇w L_train(w, α) + weight_decay * w)      (the reference code's step)
    ∇α L_val(w', α) = ∂α L_val(w', α) - ξ ∇²α,w L_train(w, α) ∇w' L_val(w', α)

First order drops the virtual step (ξ = 0). Second order is a one-step unrolled bilevel problem
(:func:`alpha_problem`, differentiated exactly by :class:`autometa.hypergrad.Unrolled`), or the
paper's approximation with a finite-difference Hessian-vector product (:func:`finite_difference_hvp`,
ε = 0.01 / ||∇w' L_val||).

Collapse diagnostics per epoch: the parameter-free operations of the derived normal cell, and the
dominant eigenvalue of the validation loss' Hessian with respect to α (:func:`hessian_eigenvalue`,
power iteration on exact Hessian-vector products).

References: Liu, Simonyan & Yang, "DARTS", ICLR 2019 (Section 2.3, ``architect.py``); Zela et al.
2020, "Understanding and Robustifying Differentiable Architecture Search"; Liang et al. 2019,
"DARTS+"; Chu et al. 2021, "DARTS-".
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from autometa.errors import ConfigError, NumericalError
from autometa.hypergrad import InnerProblem, Unrolled, gradients
from autometa.slots.architecture._genotype import Genotype

Params = dict[str, Tensor]
Batch = tuple[Tensor, Tensor]


class MomentumStep:
    """The virtual step of the reference code as an ``init/update`` rule of the optimizer slot's form.

    ``buf = momentum * buf + grad + weight_decay * w``; ``w - lr * buf``: the same arithmetic as
    ``torch.optim.SGD(momentum, weight_decay)`` and the optimizer slot's ``Momentum`` filler (tested
    equal), written here because a slot package does not import another slot. Any filler of the
    optimizer slot can be passed instead (``virtual_optimizer=``).
    """

    def __init__(self, lr, momentum: float = 0.9, weight_decay: float = 0.0):
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay

    def init(self, params: Params, meta=None) -> dict[str, Tensor]:
        return {"step": torch.zeros((), dtype=torch.float64),
                **{f"momentum_buffer/{k}": torch.zeros_like(p).detach() for k, p in params.items()}}

    def update(self, grads: Params, state, params: Params, meta=None):
        new, out = {}, {"step": state["step"] + 1}
        for k, p in params.items():
            buf = self.momentum * state[f"momentum_buffer/{k}"] + grads[k] + self.weight_decay * p
            new[k] = p - self.lr * buf
            out[f"momentum_buffer/{k}"] = buf
        return new, out


def _loss(filler, network: nn.Module, params: Params, meta: dict[str, Tensor], batch: Batch,
          aux_skip: float = 0.0) -> Tensor:
    x, y = batch
    return F.cross_entropy(filler.logits(network, params, x, meta, aux_skip=aux_skip), y)


def alpha_problem(filler, network: nn.Module, params: Params, train: Batch, val: Batch, lr: float,
                  momentum: float = 0.9, weight_decay: float = 0.0, buffers: dict[str, Tensor] | None = None,
                  aux_skip: float = 0.0, virtual_optimizer=None) -> InnerProblem:
    """DARTS' α-gradient as a one-step bilevel problem for :mod:`autometa.hypergrad`.

    ``meta`` is α (``{"normal", "reduce"}``); the inner loop starts from the current weights
    ``params`` (constants), takes one virtual step on the training batch with the optimizer's
    momentum buffers ``buffers`` (name -> tensor; zeros if absent), and the outer loss is the
    validation batch's loss. ``Unrolled()(problem, meta)`` is the exact second-order surrogate;
    ``Unrolled(first_order=True)`` drops ∇²α,w; ``steps=0`` is DARTS' first order.
    """
    rule = virtual_optimizer or MomentumStep(lr, momentum, weight_decay)
    start = {k: v.detach() for k, v in params.items()}

    def init_state(p, meta):
        state = rule.init(p)
        for k in p:
            if buffers is not None and buffers.get(k) is not None and f"momentum_buffer/{k}" in state:
                state[f"momentum_buffer/{k}"] = buffers[k].detach()
        return state

    def outer(p, meta):
        loss = _loss(filler, network, p, meta, val, aux_skip)
        return loss, {"loss": loss.detach()}

    return InnerProblem(init=lambda meta: dict(start),
                        inner_loss=lambda p, meta: _loss(filler, network, p, meta, train, aux_skip),
                        outer_loss=outer, init_state=init_state,
                        update=lambda g, s, p, meta: rule.update(g, s, p), steps=1)


def finite_difference_hvp(loss: Callable[[Params, dict[str, Tensor]], Tensor], params: Params,
                          meta: dict[str, Tensor], vector: Params, r: float = 0.01) -> dict[str, Tensor]:
    """``∇²meta,params loss · vector`` by central differences of ``∇meta loss`` along ``vector``.

    The step is ``ε = r / ||vector||`` (the reference code's 0.01 / norm), so the cost is two
    gradients with respect to ``meta`` and no second-order graph.

    References: Liu et al. 2019, Eq. (8).
    """
    norm = torch.sqrt(sum((v.detach() ** 2).sum() for v in vector.values()))
    if not torch.isfinite(norm):
        raise NumericalError(f"The vector of the finite-difference Hessian-vector product is not finite "
                             f"(norm {norm.item()}); lower the learning rates or clip gradients.")
    eps = r / norm.clamp_min(1e-12)
    keys = list(meta)
    grads = []
    for sign in (1.0, -1.0):
        shifted = {k: (p.detach() + sign * eps * vector[k].detach()) if k in vector else p.detach()
                   for k, p in params.items()}
        leaves = {k: meta[k].detach().requires_grad_(True) for k in keys}
        with torch.enable_grad():
            found = torch.autograd.grad(loss(shifted, leaves), [leaves[k] for k in keys], allow_unused=True)
        grads.append([torch.zeros_like(leaves[k]) if g is None else g for k, g in zip(keys, found)])
    return {k: (gp - gn) / (2 * eps) for k, gp, gn in zip(keys, *grads)}


def alpha_gradient(filler, network: nn.Module, params: Params, train: Batch, val: Batch, lr: float,
                   order: str = "second", hessian: str = "finite_difference", momentum: float = 0.9,
                   weight_decay: float = 0.0, buffers: dict[str, Tensor] | None = None, aux_skip: float = 0.0,
                   meta: dict[str, Tensor] | None = None, virtual_optimizer=None, r: float = 0.01
                   ) -> tuple[dict[str, Tensor], Tensor]:
    """The α-gradient of one DARTS step and the validation loss it saw.

    Args:
        order: ``"first"`` (∂α L_val at the current weights) or ``"second"`` (through the virtual step).
        hessian: for second order, ``"exact"`` (double backward, :class:`autometa.hypergrad.Unrolled`)
            or ``"finite_difference"`` (the paper's Eq. (8)).
        lr, momentum, weight_decay, buffers: the virtual step (ξ = the weights' current lr).
        meta: α (default: the filler's own).

    Returns:
        ``({"normal": ..., "reduce": ...}, validation loss)``, detached.
    """
    meta = {k: v.detach().requires_grad_(True) for k, v in filler.alphas(meta).items()}
    keys = list(meta)
    problem = alpha_problem(filler, network, params, train, val, lr, momentum, weight_decay, buffers, aux_skip,
                            virtual_optimizer)
    with torch.enable_grad():
        if order == "first":
            loss, _ = problem.outer_loss({k: v.detach() for k, v in params.items()}, meta)
            return _grads(loss, meta, keys), loss.detach()
        if order != "second":
            raise ConfigError(f"The DARTS `order` must be 'first' or 'second'. Got {order!r}.")
        if hessian == "exact":
            loss, _ = Unrolled()(problem, meta)
            return _grads(loss, meta, keys), loss.detach()
        if hessian != "finite_difference":
            raise ConfigError(f"The DARTS `hessian` must be 'exact' or 'finite_difference'. Got {hessian!r}.")
        # the paper's approximation: the virtual step as constants, the mixed term by finite differences
        start = {k: v.detach() for k, v in params.items()}
        step = gradients(lambda p: problem.inner_loss(p, meta), start, list(start), first_order=True)
        virtual, _ = problem.update(step, problem.init_state(start, meta), start, meta)
        virtual = {k: v.detach().requires_grad_(True) for k, v in virtual.items()}
        loss, _ = problem.outer_loss(virtual, meta)
        found = torch.autograd.grad(loss, [meta[k] for k in keys] + list(virtual.values()), allow_unused=True)
        found = [torch.zeros_like(v) if g is None else g for v, g in zip([*meta.values(), *virtual.values()], found)]
    direct, vector = dict(zip(keys, found[:len(keys)])), dict(zip(virtual, found[len(keys):]))
    implicit = finite_difference_hvp(problem.inner_loss, start, meta, vector, r)
    return {k: direct[k] - lr * implicit[k] for k in keys}, loss.detach()


def _grads(loss: Tensor, meta: dict[str, Tensor], keys: list[str]) -> dict[str, Tensor]:
    """``∂loss/∂meta``; zeros for a kind of cell the network does not have (``layers`` < 3: no normal cell)."""
    found = torch.autograd.grad(loss, [meta[k] for k in keys], allow_unused=True)
    return {k: torch.zeros_like(meta[k]) if g is None else g for k, g in zip(keys, found)}


def hessian_eigenvalue(loss: Callable[[dict[str, Tensor]], Tensor], meta: dict[str, Tensor], iterations: int = 20,
                       tol: float = 1e-4, seed: int = 0) -> float:
    """The dominant eigenvalue (largest in magnitude) of ``∇²meta loss`` by power iteration on exact
    Hessian-vector products (double backward); stops when it changes by less than ``tol`` (relative).

    References: Zela et al. 2020, "Understanding and Robustifying Differentiable Architecture Search"
    (the eigenvalue grows as DARTS collapses).
    """
    keys = list(meta)
    leaves = [meta[k].detach().requires_grad_(True) for k in keys]
    with torch.enable_grad():
        grads = torch.autograd.grad(loss(dict(zip(keys, leaves))), leaves, create_graph=True, allow_unused=True)
    used = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
    if not used:
        return 0.0  # the loss is linear in (or independent of) meta
    grads, leaves = [grads[i] for i in used], [leaves[i] for i in used]
    g = torch.Generator().manual_seed(seed)
    v = [torch.randn(p.shape, generator=g, dtype=p.dtype) for p in leaves]
    norm = torch.sqrt(sum((x ** 2).sum() for x in v))
    v = [x / norm for x in v]
    value = 0.0
    for i in range(iterations):
        hv = torch.autograd.grad(grads, leaves, grad_outputs=v, retain_graph=True, allow_unused=True)
        hv = [torch.zeros_like(p) if h is None else h for p, h in zip(leaves, hv)]
        new = sum((a * b).sum() for a, b in zip(hv, v)).item()
        norm = torch.sqrt(sum((x ** 2).sum() for x in hv))
        if norm == 0:
            return 0.0
        v = [x / norm for x in hv]
        if i and abs(new - value) <= tol * max(abs(new), 1e-12):
            return new
        value = new
    return value


@dataclass
class SearchResult:
    """What :func:`search` returns.

    Attributes:
        genotype: the derived cell at the end (or at the early stop).
        history: one dict per epoch: ``epoch``, ``lr``, ``train_loss``, ``train_accuracy``,
            ``val_loss``, ``val_accuracy``, ``parameter_free`` and ``skip_connect`` (in the
            derived normal cell), ``eigenvalue`` (dominant, of the validation Hessian wrt α;
            ``None`` when not computed), ``genotype`` (its dict), ``cpu_s`` (cumulative).
        stopped_early: whether the early-stop remedy ended the search.
        cpu_s: CPU time of the process during the search (diagnostics included).
        diagnostics_cpu_s: the part of ``cpu_s`` spent on the per-epoch diagnostics (the validation
            accuracy and the Hessian eigenvalue), which the search itself does not need: a budget
            matched to a search is ``cpu_s - diagnostics_cpu_s``.
        steps: α/w step pairs taken.
    """

    genotype: Genotype
    history: list[dict] = field(default_factory=list)
    stopped_early: bool = False
    cpu_s: float = 0.0
    diagnostics_cpu_s: float = 0.0
    steps: int = 0


def _halves(n: int, seed: int) -> tuple[Tensor, Tensor]:
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[: n // 2], order[n // 2: 2 * (n // 2)]


def search(filler, x: Tensor, y: Tensor, num_classes: int | None = None, *, epochs: int | None = None,
           steps_per_epoch: int | None = None, eigenvalue_batches: int = 1, eigenvalue_iterations: int = 50,
           seed: int | None = None, log: Callable[[dict], None] | None = None) -> SearchResult:
    """Run the DARTS search of ``filler`` (a :class:`~autometa.slots.architecture.DARTS`) on ``(x, y)``.

    The images are split (seeded) into two disjoint halves: the weights are trained on the first,
    α on the second, one step each in turn (α first, as the reference code). α is updated in
    place in ``filler`` (its ``normal``/``reduce`` parameters).

    Args:
        x, y: training images ``(N, C, H, W)`` (float) and labels ``(N,)``.
        num_classes: default ``y.max() + 1``.
        epochs: default ``filler.epochs``; steps_per_epoch: cap (default: the half's size / batch size).
        eigenvalue_batches: validation batches whose loss' Hessian is probed each epoch (0: skip).
        eigenvalue_iterations: power iterations (at most; it stops when the estimate settles). Power
            iteration converges slowly when the two largest eigenvalues in magnitude are close (on a
            tiny supernet, 0.241 and -0.223 took about 150): read the value as an estimate.
        seed: the split, batch order and weights (default ``filler.seed``).
        log: called with each epoch's history entry.

    Raises:
        ConfigError: inputs of the wrong shape, too few images for one batch per half.
        NumericalError: a loss or α became NaN or inf.
    """
    if x.dim() != 4 or y.dim() != 1 or len(x) != len(y):
        raise ConfigError(f"search needs images (N, C, H, W) and labels (N,). Got {tuple(x.shape)} and "
                          f"{tuple(y.shape)}.")
    batch = filler.batch_size
    if len(x) < 2 * batch:
        raise ConfigError(f"The DARTS search splits the training set in two halves of at least one batch "
                          f"(`batch_size`={batch}). Got {len(x)} images; give more or lower `batch_size`.")
    seed = filler.seed if seed is None else seed
    epochs = filler.epochs if epochs is None else epochs
    num_classes = int(y.max()) + 1 if num_classes is None else num_classes
    network = filler.build_network(tuple(x.shape[1:]), num_classes, seed=seed).to(x.dtype)
    weights = [p for p in network.parameters()]
    w_opt = torch.optim.SGD(weights, lr=filler.lr, momentum=filler.momentum, weight_decay=filler.weight_decay)
    a_opt = torch.optim.Adam([filler.normal, filler.reduce], lr=filler.arch_lr, betas=filler.arch_betas,
                             weight_decay=filler.arch_weight_decay)
    train_idx, val_idx = _halves(len(x), seed)
    per_epoch = len(train_idx) // batch
    if steps_per_epoch is not None:
        per_epoch = max(1, min(per_epoch, steps_per_epoch))
    generator = torch.Generator().manual_seed(seed + 1)
    names = [n for n, _ in network.named_parameters()]
    result = SearchResult(genotype=filler.genotype())
    start = time.process_time()
    for epoch in range(epochs):
        lr = filler.lr_min + (filler.lr - filler.lr_min) * (1 + math.cos(math.pi * epoch / epochs)) / 2
        for group in w_opt.param_groups:
            group["lr"] = lr
        aux = (1.0 - epoch / epochs) if filler.remedy == "aux_skip" else 0.0
        t_perm = train_idx[torch.randperm(len(train_idx), generator=generator)]
        v_perm = val_idx[torch.randperm(len(val_idx), generator=generator)]
        sums = {"train_loss": 0.0, "train_accuracy": 0.0, "val_loss": 0.0}
        for step in range(per_epoch):
            ti, vi = t_perm[step * batch:(step + 1) * batch], v_perm[step * batch:(step + 1) * batch]
            train, val = (x[ti], y[ti]), (x[vi], y[vi])
            params = dict(network.named_parameters())
            buffers = {n: w_opt.state[p].get("momentum_buffer") for n, p in zip(names, weights)}
            grads, val_loss = alpha_gradient(filler, network, params, train, val, lr, filler.order, filler.hessian,
                                             filler.momentum, filler.weight_decay, buffers, aux, r=filler.hvp_eps)
            a_opt.zero_grad(set_to_none=True)
            filler.normal.grad, filler.reduce.grad = grads["normal"].to(filler.normal.dtype), \
                grads["reduce"].to(filler.reduce.dtype)
            a_opt.step()
            w_opt.zero_grad(set_to_none=True)
            with torch.enable_grad():
                logits = filler.logits(network, dict(network.named_parameters()), train[0], aux_skip=aux)
                loss = F.cross_entropy(logits, train[1])
                loss.backward()
            if filler.grad_clip:
                nn.utils.clip_grad_norm_(weights, filler.grad_clip)
            w_opt.step()
            if not (torch.isfinite(loss) and torch.isfinite(val_loss) and torch.isfinite(filler.normal).all()
                    and torch.isfinite(filler.reduce).all()):
                raise NumericalError(f"The DARTS search diverged at epoch {epoch}, step {step} (train loss "
                                     f"{loss.item():.4g}, val loss {val_loss.item():.4g}); lower `lr` or `arch_lr`.")
            sums["train_loss"] += loss.item()
            sums["train_accuracy"] += (logits.argmax(-1) == train[1]).double().mean().item()
            sums["val_loss"] += val_loss.item()
            result.steps += 1
        entry = {"epoch": epoch, "lr": lr, **{k: v / per_epoch for k, v in sums.items()}}
        diagnostics_start = time.process_time()
        entry.update(_validation(filler, network, x, y, val_idx, batch, aux))
        genotype = filler.genotype()
        entry["parameter_free"] = genotype.parameter_free("normal")
        entry["skip_connect"] = genotype.count("normal", {"skip_connect"})
        entry["eigenvalue"] = None
        if eigenvalue_batches:
            vi = val_idx[: eigenvalue_batches * batch]
            probe = {k: v.detach() for k, v in network.named_parameters()}
            entry["eigenvalue"] = hessian_eigenvalue(
                lambda meta, probe=probe, vi=vi, aux=aux: _loss(filler, network, probe, meta, (x[vi], y[vi]), aux),
                filler.alphas(), eigenvalue_iterations)
        result.diagnostics_cpu_s += time.process_time() - diagnostics_start
        entry["genotype"] = genotype.to_dict()
        entry["cpu_s"] = time.process_time() - start
        result.history.append(entry)
        result.genotype = genotype
        if log is not None:
            log(entry)
        if filler.remedy == "early_stop" and entry["skip_connect"] >= filler.max_skips:
            result.stopped_early = True
            break
    result.cpu_s = time.process_time() - start
    return result


@torch.no_grad()
def _validation(filler, network, x, y, idx, batch, aux) -> dict[str, float]:
    """Accuracy of the supernet on the α half (at most 8 batches, to keep the diagnostic cheap)."""
    idx = idx[: 8 * batch]
    params = dict(network.named_parameters())
    correct = 0
    for i in range(0, len(idx), batch):
        part = idx[i:i + batch]
        correct += (filler.logits(network, params, x[part], aux_skip=aux).argmax(-1) == y[part]).sum().item()
    return {"val_accuracy": correct / max(len(idx), 1)}
