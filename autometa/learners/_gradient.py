"""Optimization-based learners: MAML, FOMAML, Meta-SGD, ANIL, Reptile and iMAML.

They are one learner, :class:`MAML`, whose inner loop is built from fillers and whose
meta-gradient comes from a hypergradient estimator:

- ``optimizer=``: the inner update rule, a filler of the optimizer slot (default plain SGD at
  ``inner_lr``; Meta-SGD is the learned per-coordinate rates filler; an LSTM optimizer works too);
- ``loss=``: the loss the inner loop minimises, a filler of the loss slot (default the task's
  cross-entropy or squared error; the query loss of the outer objective is always the task's);
- ``augmentation=``: support-set augmentation, a filler of the augmentation slot (default none): the
  inner loop sees the support set and ``augmented_copies`` augmented copies of it; a learned policy
  (DADA) is differentiated through the augmented images;
- ``estimator=``: how d(query loss)/d(meta) is computed (unrolled second or first order,
  implicit, Reptile's direction, evolution strategies).

Meta-parameters are named by slot: ``init.*`` (the initialization), ``optimizer.*``, ``loss.*`` and
``augmentation.*`` (the fillers' ω); ``learn=`` chooses which of them are meta-learned.
"""

from __future__ import annotations

import hashlib

import torch
from torch import Tensor, nn

from autometa.errors import ConfigError
from autometa.hypergrad import Estimator, Implicit, InnerProblem, ReptileStep, Unrolled, build_estimator, solve
from autometa.learners._base import Learner, augmented_support, check_augmentation, check_positive, query_metrics
from autometa.nets import functional_forward
from autometa.slots import Filler, build_filler
from autometa.slots.loss import CallableLoss, default_loss
from autometa.slots.optimizer import SGD, LearnedRates

GROUPS = ("init", "optimizer", "loss", "augmentation")


def _sub(meta: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    n = len(prefix) + 1
    return {k[n:]: v for k, v in meta.items() if k.startswith(prefix + ".")}


class MAML(Learner):
    """Model-Agnostic Meta-Learning: ω is the initialization, adapted by an inner optimizer.

    Args:
        model: the network whose initialization is meta-learned.
        inner_lr: the step size of the default inner optimizer (plain SGD; 0.4 if not given).
            Give either ``inner_lr`` or ``optimizer``, not both.
        inner_steps: inner steps during meta-training.
        eval_inner_steps: inner steps at evaluation (default: ``inner_steps``; MAML used 10).
        first_order: drop second-order terms (FOMAML); shorthand for
            ``estimator=Unrolled(first_order=True)``.
        checkpoint: recompute inner-loop activations in the backward pass to save memory.
        optimizer: the inner optimizer: a filler, its name or a mapping
            (``{"name": "adam", "lr": 0.1}``).
        loss: the inner loss: a filler, its name, a mapping, or a callable ``fn(outputs, targets)``.
        estimator: the hypergradient estimator (an :class:`~autometa.hypergrad.Estimator`, its name
            or a mapping); default unrolled.
        augmentation: support-set augmentation: a filler of the augmentation slot, its name or a
            mapping (``{"name": "dada"}``); None: none. Tasks are then looped, not vmapped.
        augmented_copies: augmented copies of the support set added to it (with ``augmentation``).
        learn: the meta-parameter groups to meta-learn, among ``init``, ``optimizer``, ``loss``, ``augmentation``
            (default: ``init`` and every filler that has meta-parameters); the others stay fixed.
        reinit: start every task from a fresh random initialization instead of ``init.*``
            (the plain supervised setting of learned losses and optimizers: a network trained
            from scratch per task). The initialization is :func:`seeded_init`, seeded by a hash of
            the task's support set, so a task always gets the same one, whatever the order or
            batching; ``init`` cannot then be meta-learned, and tasks are looped, not vmapped.
        task, batching, memory_budget: see :class:`Learner`.

    Example::

        learner = MAML(Conv4(out_features=5), inner_lr=0.4, inner_steps=1)
        learner = MAML(MLP(1, 1, (40, 40)), optimizer={"name": "adam", "lr": 0.01}, task="regression")
        metrics = learner.meta_backward(tasks.sample(32, generator))
        outer_optimizer.step()

    References: Finn, Abbeel & Levine 2017, "Model-Agnostic Meta-Learning for Fast Adaptation
    of Deep Networks".
    """

    SPACE = {"inner_lr": {"float": [1e-3, 1.0], "log": True}, "inner_steps": {"int": [1, 10]}}
    #: the default inner step size when neither ``inner_lr`` nor ``optimizer`` is given
    DEFAULT_INNER_LR = 0.4

    def __init__(self, model: nn.Module, inner_lr: float | None = None, inner_steps: int = 1,
                 eval_inner_steps: int | None = None, first_order: bool = False,
                 checkpoint: bool = False, optimizer=None, loss=None, estimator=None,
                 learn: list[str] | tuple[str, ...] | None = None, reinit: bool = False,
                 augmentation=None, augmented_copies: int = 1,
                 task: str = "classification", batching: str = "auto", memory_budget: float | int | None = None):
        super().__init__(model, task, batching, memory_budget)
        name = type(self).__name__
        self.augmentation = check_augmentation(name, augmentation, augmented_copies, batching)
        self.augmented_copies = augmented_copies
        if not isinstance(reinit, bool):
            raise ConfigError(f"The `reinit` of {name} must be true or false. Got {reinit!r}.")
        if reinit and batching == "vmap":
            raise ConfigError(f"{name} with `reinit` draws each task's initialization from a seeded generator, "
                              f"which vmap cannot do; use batching 'auto', 'loop' or 'threads'.")
        self.reinit = reinit
        if optimizer is not None and inner_lr is not None:
            raise ConfigError(f"{name} got both `inner_lr` ({inner_lr!r}) and an `optimizer`; set the step size "
                              f"inside the optimizer (e.g. optimizer: {{name: sgd, lr: {inner_lr}}}).")
        if optimizer is None:
            inner_lr = self.DEFAULT_INNER_LR if inner_lr is None else inner_lr
            check_positive(name, "inner_lr", inner_lr)
            optimizer = SGD(lr=float(inner_lr))
        check_positive(name, "inner_steps", inner_steps, int)
        if eval_inner_steps is not None:
            check_positive(name, "eval_inner_steps", eval_inner_steps, int)
        self.inner_steps = inner_steps
        self.eval_inner_steps = eval_inner_steps or inner_steps
        self.first_order, self.checkpoint = bool(first_order), bool(checkpoint)
        self.optimizer = build_filler("optimizer", optimizer)
        if isinstance(loss, (Filler, str, dict)):
            self.loss = build_filler("loss", loss)
        else:
            self.loss = default_loss(task) if loss is None else CallableLoss(loss)
        if hasattr(self.loss, "check_kind"):
            self.loss.check_kind(task)
        if hasattr(self.optimizer, "build"):  # fillers whose ω is shaped like the model's parameters
            self.optimizer.build(dict(model.named_parameters()))
        if estimator is None:
            estimator = Unrolled(first_order=self.first_order, checkpoint=self.checkpoint)
        elif first_order or checkpoint:
            raise ConfigError(f"{name} got an `estimator` and `first_order`/`checkpoint`; pass them to the "
                              f"estimator (e.g. estimator: {{name: unrolled, first_order: true}}).")
        self.estimator: Estimator = build_estimator(estimator)
        self.learn = self._choose_learned(learn)

    @property
    def inner_lr(self):
        """The inner step size of an SGD-like inner optimizer (``None`` for other optimizers)."""
        return getattr(self.optimizer, "lr", None)

    def _choose_learned(self, learn) -> tuple[str, ...]:
        owned = {"init": dict(self.model.named_parameters()), "optimizer": self.optimizer.meta_params(),
                 "loss": self.loss.meta_params(),
                 "augmentation": {} if self.augmentation is None else self.augmentation.meta_params()}
        if learn is None:
            learn = [g for g in GROUPS if (g == "init" and not self.reinit) or (g != "init" and owned[g])]
        learn = [learn] if isinstance(learn, str) else list(learn)
        if self.reinit and "init" in learn:
            raise ConfigError(f"`learn` asks to meta-learn 'init' but {type(self).__name__} has reinit=True (every "
                              f"task starts from a fresh random initialization); drop 'init' from `learn` or "
                              f"set reinit to false.")
        for group in learn:
            if group not in GROUPS:
                raise ConfigError(f"`learn` names meta-parameter groups among {GROUPS}. Got {group!r}.")
            if not owned[group]:
                raise ConfigError(f"`learn` asks to meta-learn {group!r} but the {group} filler "
                                  f"{type(getattr(self, group, None)).__name__} has no meta-parameters; use a learned "
                                  f"filler or drop {group!r} from `learn`.")
        for group, tensors in owned.items():
            for t in tensors.values():
                t.requires_grad_(group in learn)
        return tuple(learn)

    def meta_params(self) -> dict[str, Tensor]:
        """ω named by slot: ``init.*``, ``optimizer.*``, ``loss.*``, ``augmentation.*`` (frozen groups do not
        require grad)."""
        meta = {f"init.{n}": p for n, p in self.model.named_parameters()}
        for slot in ("optimizer", "loss", "augmentation"):
            filler = getattr(self, slot)
            if filler is None:
                continue
            owned = dict(filler.named_parameters())
            owned.update(filler.meta_params())
            meta.update({f"{slot}.{k}": v for k, v in owned.items()})
        return meta

    def model_params(self, meta: dict[str, Tensor]) -> dict[str, Tensor]:
        """The network's parameters inside a meta-parameter dict (the ``init.*`` entries)."""
        return _sub(meta, "init")

    def space(self) -> dict:
        """The learner's searchable hyperparameters and its fillers', prefixed by slot (``optimizer.lr``)."""
        space = {k: dict(v) for k, v in self.SPACE.items()
                 if not (k == "inner_lr" and not isinstance(self.optimizer, SGD))}
        for slot in ("optimizer", "loss", "augmentation"):
            if getattr(self, slot) is not None:
                space.update({f"{slot}.{k}": v for k, v in getattr(self, slot).space().items()})
        return space

    def adapts(self, name: str) -> bool:
        """Whether the inner loop updates parameter ``name`` (all of them, for MAML)."""
        return True

    def inner_loss(self, params: dict[str, Tensor], meta: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
        """The loss the inner loop minimises on a support set (the loss filler's), on the support set and its
        augmented copies when the learner has an augmentation."""
        if self.augmentation is not None:
            x, y = augmented_support(self.augmentation, _sub(meta, "augmentation"), x, y, self.augmented_copies)
        return self.loss.mean_loss(self.predict(params, x), y, _sub(meta, "loss"))

    def problem(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, query_y: Tensor) -> InnerProblem:
        """One task's inner problem, for an estimator."""

        def outer_loss(params, meta):
            out = self.predict(params, query_x)
            loss = self.loss_fn(out, query_y)
            return loss, query_metrics(self.task, out, query_y, loss)

        return InnerProblem(
            init=self._fresh_init(support_x, support_y) if self.reinit else self.model_params,
            inner_loss=lambda p, meta: self.inner_loss(p, meta, support_x, support_y),
            outer_loss=outer_loss,
            init_state=lambda p, meta: self.optimizer.init(p, _sub(meta, "optimizer")),
            update=lambda g, s, p, meta: self.optimizer.update(g, s, p, _sub(meta, "optimizer")),
            steps=self.inner_steps,
            adapt=self.adapts,
            init_keys=None if self.reinit else {n: f"init.{n}" for n, _ in self.model.named_parameters()},
        )

    def _fresh_init(self, support_x: Tensor, support_y: Tensor):
        """``meta -> params``: a random initialization seeded by the task's support set."""
        digest = hashlib.sha1()
        for tensor in (support_x, support_y):
            digest.update(tensor.detach().cpu().numpy().tobytes())
        seed = int(digest.hexdigest()[:15], 16)
        return lambda meta: seeded_init(self.model_params(meta), seed)

    def adapt(self, support_x: Tensor, support_y: Tensor, steps: int | None = None,
              meta: dict[str, Tensor] | None = None, training: bool = False) -> dict[str, Tensor]:
        """The network's parameters after adapting to one task's support set (no query set needed)."""
        meta = self.meta_params() if meta is None else meta
        steps = steps or (self.inner_steps if training else self.eval_inner_steps)
        problem = self.problem(support_x, support_y, support_x, support_y)
        unrolled = isinstance(self.estimator, Unrolled)
        return solve(problem, meta, steps, first_order=not training or not unrolled or self.estimator.first_order,
                     checkpoint=training and unrolled and self.estimator.checkpoint)

    def predict(self, params: dict[str, Tensor], x: Tensor) -> Tensor:
        """Outputs of the network with (adapted) ``params`` on inputs ``x``."""
        return functional_forward(self.model, params, x)

    def _mode(self, batch) -> str:
        if (self.reinit or self.augmentation is not None) and self.batching == "auto":
            return "loop"
        return super()._mode(batch) if self.estimator.batchable else "loop"

    def task_loss(self, meta, support_x, support_y, query_x, query_y, training):
        steps = self.inner_steps if training else self.eval_inner_steps
        return self.estimator(self.problem(support_x, support_y, query_x, query_y), meta, training, steps)


def seeded_init(like: dict[str, Tensor], seed: int) -> dict[str, Tensor]:
    """Fresh parameters shaped like ``like``, drawn from a generator seeded with ``seed``.

    PyTorch's default initialization of linear and convolutional layers, ``U(-1/sqrt(fan_in),
    1/sqrt(fan_in))`` for weights (two or more dimensions) and their biases; one-dimensional
    weights without such a layer (normalization scales) are ones and other biases zeros.
    """
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for name, p in like.items():
        weight = like.get(name[:-len("bias")] + "weight") if name.endswith("bias") else p
        if weight is not None and weight.dim() >= 2:
            bound = weight[0].numel() ** -0.5
            values = (torch.rand(p.shape, generator=generator, dtype=p.dtype) * 2 - 1) * bound
            out[name] = values.to(p.device)
        else:
            out[name] = torch.ones_like(p) if name.endswith("weight") else torch.zeros_like(p)
        out[name] = out[name].detach()
    return out


class FOMAML(MAML):
    """First-order MAML: :class:`MAML` with ``first_order=True``."""

    def __init__(self, model: nn.Module, **kwargs):
        if "estimator" not in kwargs:
            kwargs.setdefault("first_order", True)
        super().__init__(model, **kwargs)


class ANIL(MAML):
    """Almost No Inner Loop: only the head (``head.*`` parameters) is adapted per task.

    The meta-gradient is still second order (through the head's inner steps into the body).

    References: Raghu et al. 2020, "Rapid Learning or Feature Reuse?".
    """

    def __init__(self, model: nn.Module, **kwargs):
        if not any(n.startswith("head.") for n, _ in model.named_parameters()):
            raise ConfigError(f"ANIL adapts parameters named 'head.*' but {type(model).__name__} "
                              f"has none; use a network with a `head` submodule (Conv4, MLP).")
        super().__init__(model, **kwargs)

    def adapts(self, name: str) -> bool:
        return name.startswith("head.")


class MetaSGD(MAML):
    """Meta-SGD: MAML whose inner optimizer is the learned per-coordinate rates filler.

    ``params - lrs ⊙ grad`` with ``lrs`` in ω (``optimizer.lrs.*``), all starting at ``inner_lr``.
    Equivalent to ``MAML(model, optimizer=LearnedRates(lr=inner_lr))``.

    References: Li et al. 2017, "Meta-SGD: Learning to Learn Quickly for Few-Shot Learning".
    """

    SPACE = {"inner_lr": {"float": [1e-3, 1.0], "log": True}}

    def __init__(self, model: nn.Module, inner_lr: float = 0.4, **kwargs):
        check_positive("MetaSGD", "inner_lr", inner_lr)
        super().__init__(model, optimizer=LearnedRates(lr=inner_lr), **kwargs)

    def space(self) -> dict:
        return {k: dict(v) for k, v in self.SPACE.items()}


class Reptile(MAML):
    """Reptile: move the initialization toward the weights adapted to each task.

    MAML with the :class:`~autometa.hypergrad.ReptileStep` estimator: the meta-gradient written to
    ``.grad`` is ``mean_tasks(params - adapted)``, so an outer SGD step of size ε gives Reptile's
    update ``params + ε (adapted - params)``.

    References: Nichol, Achiam & Schulman 2018, "On First-Order Meta-Learning Algorithms".
    """

    SPACE = {"inner_lr": {"float": [1e-3, 1.0], "log": True}, "inner_steps": {"int": [1, 20]}}

    def __init__(self, model: nn.Module, inner_lr: float | None = None, inner_steps: int = 5, **kwargs):
        kwargs.pop("first_order", None)
        if inner_lr is None and kwargs.get("optimizer") is None:
            inner_lr = 0.1
        super().__init__(model, inner_lr=inner_lr, inner_steps=inner_steps, estimator=ReptileStep(), **kwargs)


class iMAML(MAML):
    """Implicit MAML: the inner problem is regularised toward ω and differentiated implicitly.

    Inner problem: ``min_φ L_support(φ) + reg/2 ||φ - ω||²``, approximately solved with
    ``inner_steps`` of the inner optimizer. The meta-gradient ``(I + H/reg)^{-1} ∇L_query(φ)`` comes
    from the :class:`~autometa.hypergrad.Implicit` estimator (``cg_steps`` of conjugate gradient),
    never backpropagating through the inner loop, so memory does not grow with ``inner_steps``.

    References: Rajeswaran, Finn, Kakade & Levine 2019, "Meta-Learning with Implicit Gradients".
    """

    SPACE = {"inner_lr": {"float": [1e-3, 1.0], "log": True}, "reg": {"float": [0.1, 10.0], "log": True}}

    def __init__(self, model: nn.Module, inner_lr: float | None = None, inner_steps: int = 10,
                 reg: float = 1.0, cg_steps: int = 5, method: str = "cg", **kwargs):
        kwargs.pop("first_order", None)
        if inner_lr is None and kwargs.get("optimizer") is None:
            inner_lr = 0.1
        check_positive("iMAML", "reg", reg)
        check_positive("iMAML", "cg_steps", cg_steps, int)
        super().__init__(model, inner_lr=inner_lr, inner_steps=inner_steps,
                         estimator=Implicit(method=method, iterations=cg_steps), **kwargs)
        self.reg, self.cg_steps, self.method = float(reg), cg_steps, method

    def inner_loss(self, params, meta, x, y):
        init = self.model_params(meta)
        fit = super().inner_loss(params, meta, x, y)
        return fit + 0.5 * self.reg * sum(((params[k] - init[k]) ** 2).sum() for k in params)
