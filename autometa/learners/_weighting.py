"""Supervised training on noisy labels with a weighting filler: label-noise generators, the clean
hold-out, the one-step differentiable look-ahead and :class:`NoisyLabelTrainer`.

The look-ahead is a one-step :class:`~autometa.hypergrad.InnerProblem` solved by the
:class:`~autometa.hypergrad.Unrolled` estimator: the classifier takes a virtual SGD step on the
weighted training loss (ω inside the weights), and the cross-entropy on a clean batch after that
step is the outer loss whose gradient with respect to ω trains Meta-Weight-Net (persistent ω) or
gives L2RW's weights (per-batch ω).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import autometa.slots.loss._robust  # noqa: F401  registers generalized_cross_entropy (see the module)
from autometa.errors import ConfigError
from autometa.hypergrad import InnerProblem, Unrolled
from autometa.nets import functional_forward
from autometa.slots import build_filler

NOISE_KINDS = ("uniform", "symmetric", "pair")


def _check_rate(rate) -> float:
    if not isinstance(rate, (int, float)) or isinstance(rate, bool) or not 0 <= rate <= 1:
        raise ConfigError(f"The label-noise `rate` must be a float in [0, 1]. Got {rate!r}.")
    return float(rate)


def noise_transition(kind: str, rate: float, classes: int) -> np.ndarray:
    """The label-noise transition matrix ``T[true, noisy]`` (rows sum to 1).

    - ``uniform``: with probability ``rate`` the label is redrawn uniformly from *all* classes, so
      it may stay the same: "40% uniform" flips 36% of 10-class labels (``rate * (K-1) / K``), as
      in the reference code of Meta-Weight-Net and L2RW (Hendrycks et al.'s ``uniform_mix_C``).
    - ``symmetric``: with probability ``rate`` the label moves to one of the *other* classes,
      uniformly: ``rate`` of the labels flip.
    - ``pair``: with probability ``rate`` class ``i`` becomes class ``(i + 1) mod K`` (pair flip,
      Han et al. 2018).

    Raises:
        ConfigError: an unknown kind, a rate outside [0, 1] or fewer than 2 classes.
    """
    if kind not in NOISE_KINDS:
        raise ConfigError(f"Unknown label-noise kind {kind!r}. Choose one of {list(NOISE_KINDS)}.")
    rate = _check_rate(rate)
    if not isinstance(classes, (int, np.integer)) or classes < 2:
        raise ConfigError(f"Label noise needs at least 2 classes. Got {classes!r}.")
    eye = np.eye(classes)
    if kind == "uniform":
        return rate / classes * np.ones((classes, classes)) + (1 - rate) * eye
    if kind == "symmetric":
        return rate / (classes - 1) * (1 - eye) + (1 - rate) * eye
    return (1 - rate) * eye + rate * np.roll(eye, 1, axis=1)


def corrupt_labels(labels: np.ndarray, kind: str, rate: float, classes: int | None = None,
                   seed: int = 0) -> np.ndarray:
    """Noisy copies of ``labels``: each label is redrawn from its row of :func:`noise_transition`.

    Args:
        labels: integer class labels in ``[0, classes)``.
        kind, rate: see :func:`noise_transition`.
        classes: the number of classes (default: ``labels.max() + 1``).
        seed: seeds the draws (a private ``numpy`` generator; same seed, same labels).

    Example::

        noisy = corrupt_labels(y, "uniform", 0.4, classes=10, seed=0)   # about 36% differ from y
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ConfigError(f"corrupt_labels needs a 1-d array of integer labels. Got shape {labels.shape}, "
                          f"dtype {labels.dtype}.")
    classes = int(labels.max()) + 1 if classes is None else classes
    if len(labels) and (labels.min() < 0 or labels.max() >= classes):
        raise ConfigError(f"Labels must lie in [0, {classes}). Got labels from {labels.min()} to {labels.max()}.")
    cumulative = np.cumsum(noise_transition(kind, rate, classes), axis=1)[labels]
    draws = np.random.default_rng(seed).random(len(labels))
    return np.minimum((draws[:, None] >= cumulative).sum(1), classes - 1).astype(labels.dtype)


def clean_holdout(labels: np.ndarray, size: int = 1000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into a class-balanced clean set of ``size`` examples and the rest (to be corrupted).

    Returns ``(clean_indices, rest_indices)``, each sorted; seeded by a private generator.
    """
    labels = np.asarray(labels)
    classes = np.unique(labels)
    if not isinstance(size, (int, np.integer)) or size < len(classes) or size % len(classes):
        raise ConfigError(f"The clean set size must be a positive multiple of the {len(classes)} classes "
                          f"(the same number of images per class). Got {size!r}.")
    rng = np.random.default_rng(seed)
    per_class = size // len(classes)
    chosen = []
    for c in classes:
        members = np.flatnonzero(labels == c)
        if len(members) < per_class:
            raise ConfigError(f"Class {c} has {len(members)} examples; a clean set of {size} needs {per_class} "
                              f"per class. Use a smaller clean set.")
        chosen.append(rng.choice(members, per_class, replace=False))
    clean = np.sort(np.concatenate(chosen))
    return clean, np.setdiff1d(np.arange(len(labels)), clean)


def lookahead_problem(model: nn.Module, params: dict[str, Tensor], weighting, loss, x: Tensor, y: Tensor,
                      x_clean: Tensor, y_clean: Tensor, lr: float) -> InnerProblem:
    """The one-step look-ahead as an :class:`InnerProblem` over the weighting's meta-parameters.

    The inner loss is ``weighting.weighted_loss`` of the slot loss on the noisy batch, the update
    one plain SGD step of size ``lr`` from ``params`` (detached: only ω is differentiated), and
    the outer loss the mean cross-entropy on the clean batch after that step.
    """

    def inner_loss(p, meta):
        outputs = functional_forward(model, p, x)
        return weighting.weighted_loss(loss.loss(outputs, y), outputs, y, meta)

    def outer_loss(p, meta):
        value = F.cross_entropy(functional_forward(model, p, x_clean), y_clean)
        return value, {"clean_loss": value.detach()}

    return InnerProblem(
        init=lambda meta: {k: v.detach() for k, v in params.items()},
        inner_loss=inner_loss, outer_loss=outer_loss,
        init_state=lambda p, meta: {},
        update=lambda grads, state, p, meta: ({k: v - lr * grads[k] for k, v in p.items()}, state),
        steps=1,
    )


def _positive(owner: str, name: str, value, allow_zero: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        raise ConfigError(f"The `{name}` of {owner} must be a float {'>=' if allow_zero else '>'} 0. Got {value!r}.")
    return float(value)


class NoisyLabelTrainer:
    """Train a classifier on noisy labels with a weighting filler and a loss filler.

    Each :meth:`step` on a noisy batch: if the weighting needs it (``weighting.lookahead``), a
    one-step differentiable look-ahead (:func:`lookahead_problem`, :class:`~autometa.hypergrad.Unrolled`)
    on a clean batch gives the meta-gradient of ω; persistent ω (Meta-Weight-Net) takes an Adam
    step on it, per-batch ω (L2RW) turns it into the batch's weights. Then the classifier takes
    the real step, SGD with momentum on ``mean(weights * losses)``.

    Args:
        model: the classifier (its parameters are trained in place).
        weighting: a weighting filler or its config (``"uniform"``, ``{name: meta_weight_net}``, ...).
        loss: a loss filler or its config (``"cross_entropy"``, ``{name: focal, gamma: 2}``, ...).
        lr, momentum, weight_decay: the classifier's SGD; the look-ahead step uses the same ``lr``.
        meta_lr, meta_weight_decay: Adam on persistent ω (1e-3 and 1e-4 in Meta-Weight-Net's code).

    Example::

        trainer = NoisyLabelTrainer(MLP(784, 10, (256,)), weighting="meta_weight_net")
        trainer.step(x_noisy, y_noisy, x_clean, y_clean)

    References: Shu et al. 2019 (Meta-Weight-Net); Ren et al. 2018 (L2RW).
    """

    def __init__(self, model: nn.Module, weighting="uniform", loss="cross_entropy", lr: float = 0.05,
                 momentum: float = 0.9, weight_decay: float = 5e-4, meta_lr: float = 1e-3,
                 meta_weight_decay: float = 1e-4):
        owner = "NoisyLabelTrainer"
        self.model = model
        self.weighting = build_filler("weighting", weighting)
        self.loss = build_filler("loss", loss)
        self.loss.check_kind("classification")
        self.optimizer = torch.optim.SGD(model.parameters(), lr=_positive(owner, "lr", lr),
                                         momentum=_positive(owner, "momentum", momentum, allow_zero=True),
                                         weight_decay=_positive(owner, "weight_decay", weight_decay, True))
        persistent = list(self.weighting.meta_params().values())
        self.meta_optimizer = torch.optim.Adam(
            persistent, lr=_positive(owner, "meta_lr", meta_lr),
            weight_decay=_positive(owner, "meta_weight_decay", meta_weight_decay, True)) if persistent else None

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def lookahead(self, x: Tensor, y: Tensor, x_clean: Tensor, y_clean: Tensor,
                  meta: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """The clean-batch loss after the virtual step, differentiable with respect to ``meta``."""
        params = {k: v for k, v in self.model.named_parameters()}
        problem = lookahead_problem(self.model, params, self.weighting, self.loss, x, y, x_clean, y_clean, self.lr)
        return Unrolled()(problem, meta)

    def batch_weights(self, x: Tensor, y: Tensor, x_clean: Tensor | None = None,
                      y_clean: Tensor | None = None) -> Tensor | None:
        """Update persistent ω by its look-ahead meta-gradient; return per-batch weights (None if the
        weighting has no per-batch ω, whose weights then come from :meth:`step`'s forward pass)."""
        if not self.weighting.lookahead:
            return None
        if x_clean is None or y_clean is None:
            raise ConfigError(f"The {type(self.weighting).__name__} weighting learns from a clean batch: pass "
                              f"x_clean and y_clean to step(), or choose weighting 'uniform'.")
        persistent = self.weighting.meta_params()
        per_batch = self.weighting.batch_meta(len(y), dtype=next(self.model.parameters()).dtype, device=x.device)
        meta = {**persistent, **per_batch}
        clean_loss, _ = self.lookahead(x, y, x_clean, y_clean, meta)
        names = [k for k, v in meta.items() if v.requires_grad]
        grads = dict(zip(names, torch.autograd.grad(clean_loss, [meta[k] for k in names], allow_unused=True)))
        if self.meta_optimizer is not None:
            self.meta_optimizer.zero_grad(set_to_none=True)
            for k, v in persistent.items():
                v.grad = grads.get(k) if grads.get(k) is not None else torch.zeros_like(v)
            self.meta_optimizer.step()
        if per_batch:
            return self.weighting.weights_from_meta_gradient(
                {k: grads[k] if grads[k] is not None else torch.zeros_like(per_batch[k]) for k in per_batch})
        return None

    def step(self, x: Tensor, y: Tensor, x_clean: Tensor | None = None, y_clean: Tensor | None = None) -> dict:
        """One training step on a noisy batch (with a clean batch if the weighting learns)."""
        self.model.train()
        weights = self.batch_weights(x, y, x_clean, y_clean)
        outputs = self.model(x)
        losses = self.loss.loss(outputs, y)
        if weights is None:
            with torch.no_grad():
                weights = self.weighting.weighting(losses.detach(), outputs.detach(), y)
        objective = (weights * losses).sum() / len(losses)
        self.optimizer.zero_grad(set_to_none=True)
        objective.backward()
        self.optimizer.step()
        return {"loss": objective.item(), "mean_weight": weights.mean().item()}

    def fit_epoch(self, x: Tensor, y: Tensor, x_clean: Tensor | None = None, y_clean: Tensor | None = None,
                  batch_size: int = 100, clean_batch_size: int = 100, generator: torch.Generator | None = None,
                  on_step: Callable[[dict], None] | None = None) -> dict:
        """One pass over ``(x, y)`` in shuffled batches; a clean batch is drawn for every step that needs one."""
        order = torch.randperm(len(y), generator=generator)
        total, steps = 0.0, 0
        for start in range(0, len(y), batch_size):
            idx = order[start:start + batch_size]
            clean = (None, None)
            if self.weighting.lookahead:
                pick = torch.randint(0, len(y_clean), (clean_batch_size,), generator=generator)
                clean = (x_clean[pick], y_clean[pick])
            metrics = self.step(x[idx], y[idx], *clean)
            total, steps = total + metrics["loss"], steps + 1
            if on_step is not None:
                on_step(metrics)
        return {"train_loss": total / max(steps, 1)}

    @torch.no_grad()
    def accuracy(self, x: Tensor, y: Tensor, batch_size: int = 2000) -> float:
        """Classification accuracy of the model on ``(x, y)``."""
        self.model.eval()
        correct = sum((self.model(x[i:i + batch_size]).argmax(-1) == y[i:i + batch_size]).sum().item()
                      for i in range(0, len(y), batch_size))
        return correct / max(len(y), 1)
