"""DADA's search: the policy's ω learned through a one-step unrolled bilevel objective.

Each step draws a training and a validation batch. The network takes a *virtual* SGD step on the
augmented training batch (ω inside the augmentation); the validation loss after that step is the
outer objective, differentiated with respect to ω by :class:`~autometa.hypergrad.Unrolled` (the
one-step problem is an :class:`~autometa.hypergrad.InnerProblem`, as in DARTS and DADA). The
sub-policy logits get their gradient from RELAX with a learned control variate (default) or from
the Gumbel-softmax straight-through path; probabilities and magnitudes from the relaxed Bernoulli
and the operations' magnitude gradients. ω takes an Adam step; then the network takes the real
step on a freshly augmented training batch.

References: Li et al. 2020 (DADA); Liu et al. 2019 (DARTS, the one-step unrolled approximation);
Grathwohl et al. 2018 (RELAX).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from autometa.errors import ConfigError
from autometa.hypergrad import InnerProblem, Unrolled
from autometa.nets import functional_forward
from autometa.slots.augmentation._dada import DADA, ControlVariate, relax_surrogate, relax_variance_loss

POLICY_ESTIMATORS = ("relax", "straight_through")


def unrolled_problem(model: nn.Module, params: dict[str, Tensor], policy: DADA, x: Tensor, y: Tensor,
                     x_val: Tensor, y_val: Tensor, lr: float, seed: int, choice: Tensor | None = None) -> InnerProblem:
    """One virtual SGD step of size ``lr`` on the augmented batch ``(x, y)``, then the validation loss.

    The augmentation's random draws come from a generator seeded with ``seed`` at every evaluation,
    so the problem is a deterministic function of ω (finite differences apply). With ``choice`` the
    sub-policies are fixed and carry no gradient (RELAX supplies it).
    """

    def inner_loss(p, meta):
        generator = torch.Generator().manual_seed(seed)
        kwargs = {} if choice is None else {"choice": choice, "policy_gradient": "none"}
        x_aug, y_aug = policy.augment(x, y, meta, generator, **kwargs)
        return F.cross_entropy(functional_forward(model, p, x_aug), y_aug)

    def outer_loss(p, meta):
        value = F.cross_entropy(functional_forward(model, p, x_val), y_val)
        return value, {"val_loss": value.detach()}

    return InnerProblem(
        init=lambda meta: {k: v.detach() for k, v in params.items()},
        inner_loss=inner_loss, outer_loss=outer_loss, init_state=lambda p, meta: {},
        update=lambda grads, state, p, meta: ({k: v - lr * grads[k] for k, v in p.items()}, state), steps=1)


def dada_search(policy: DADA, model: nn.Module, x: Tensor, y: Tensor, x_val: Tensor, y_val: Tensor,
                epochs: int = 1, batch_size: int = 64, lr: float = 0.05, momentum: float = 0.9,
                weight_decay: float = 5e-4, meta_lr: float = 5e-3, policy_estimator: str = "relax",
                control_lr: float = 1e-3, seed: int = 0,
                on_step: Callable[[dict], None] | None = None) -> dict:
    """Search ``policy``'s ω on ``(x, y)`` (the network's training half) against ``(x_val, y_val)``.

    Args:
        policy: a trainable :class:`DADA` filler (its parameters are updated in place).
        model: the network trained alongside (in place), as in DADA.
        epochs, batch_size: passes over ``(x, y)``; a validation batch of the same size per step.
        lr, momentum, weight_decay: the network's SGD; the virtual step uses ``lr`` without momentum.
        meta_lr: Adam on ω (betas 0.5, 0.999, DADA's settings).
        policy_estimator: ``"relax"`` (RELAX with a learned control variate, DADA's choice) or
            ``"straight_through"`` (Gumbel-softmax straight-through).
        control_lr: Adam on the control variate (RELAX only).
        seed: seeds the batches and every augmentation draw.

    Returns:
        ``{"history": [per-step dicts], "cpu_s", "wall_s"}``; the learned policy is ``policy.policy()``.
    """
    if not isinstance(policy, DADA) or not policy.trainable:
        raise ConfigError(f"dada_search needs a trainable DADA policy. Got {policy!r}; build DADA() (trainable "
                          f"by default).")
    if policy_estimator not in POLICY_ESTIMATORS:
        raise ConfigError(f"policy_estimator must be one of {POLICY_ESTIMATORS}. Got {policy_estimator!r}.")
    if not isinstance(epochs, int) or epochs < 1 or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"dada_search needs integers epochs >= 1 and batch_size >= 1. "
                          f"Got {epochs!r}, {batch_size!r}.")
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    omega = [policy.policy_logits, policy.probability_logits, policy.magnitude_logits]
    meta_optimizer = torch.optim.Adam(omega, lr=meta_lr, betas=(0.5, 0.999))
    relax = policy_estimator == "relax"
    control = ControlVariate(len(policy.pairs), temperature=policy.temperature, seed=seed).to(
        policy.policy_logits.dtype) if relax else None
    control_optimizer = torch.optim.Adam(control.parameters(), lr=control_lr) if relax else None
    history, start_cpu, start_wall = [], time.process_time(), time.perf_counter()
    for epoch in range(epochs):
        order = torch.randperm(len(y), generator=generator)
        for start in range(0, len(y) - batch_size + 1, batch_size):
            idx = order[start:start + batch_size]
            val_idx = torch.randint(0, len(y_val), (batch_size,), generator=generator)
            step_seed = int(torch.randint(0, 2 ** 62, (1,), generator=generator))
            meta = policy.meta_params()
            z = choice = None
            if relax:
                z, choice = policy.sample_choice(batch_size, meta, generator)
            params = dict(model.named_parameters())
            problem = unrolled_problem(model, params, policy, x[idx], y[idx], x_val[val_idx], y_val[val_idx], lr,
                                       step_seed, choice)
            val_loss, _ = Unrolled()(problem, meta)
            names = ["probability_logits", "magnitude_logits"] + ([] if relax else ["policy_logits"])
            grads = dict(zip(names, torch.autograd.grad(val_loss, [meta[n] for n in names], allow_unused=True,
                                                        retain_graph=relax)))
            record = {"epoch": epoch, "val_loss": val_loss.item()}
            if relax:
                surrogate = relax_surrogate(val_loss, meta["policy_logits"], z, choice, control, generator)
                estimate, variance = relax_variance_loss(surrogate, meta["policy_logits"])
                control_optimizer.zero_grad(set_to_none=True)
                for p, g in zip(control.parameters(), torch.autograd.grad(variance, list(control.parameters()),
                                                                           allow_unused=True)):
                    p.grad = torch.zeros_like(p) if g is None else g
                control_optimizer.step()
                grads["policy_logits"] = estimate.detach()
                record["relax_variance"] = variance.item()
            meta_optimizer.zero_grad(set_to_none=True)
            for name, tensor in meta.items():
                g = grads.get(name)
                tensor.grad = torch.zeros_like(tensor) if g is None else g.detach()
            meta_optimizer.step()
            with torch.no_grad():
                x_aug, y_aug = policy.augment(x[idx], y[idx], generator=torch.Generator().manual_seed(step_seed + 1))
            loss = F.cross_entropy(model(x_aug), y_aug)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            record["train_loss"] = loss.item()
            history.append(record)
            if on_step is not None:
                on_step(record)
    return {"history": history, "cpu_s": time.process_time() - start_cpu, "wall_s": time.perf_counter() - start_wall}
