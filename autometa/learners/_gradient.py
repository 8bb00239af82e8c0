"""Optimization-based learners: MAML, FOMAML, Meta-SGD, ANIL, Reptile and iMAML."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from autometa.errors import ConfigError
from autometa.hypergrad import implicit_grad, inner_sgd
from autometa.learners._base import Learner, check_positive, query_metrics
from autometa.nets import functional_forward
from autometa.tasks import TaskBatch


class MAML(Learner):
    """Model-Agnostic Meta-Learning: ω is the initialization, adapted by gradient descent.

    Args:
        model: the network whose initialization is meta-learned.
        inner_lr: inner-loop step size.
        inner_steps: inner steps during meta-training.
        eval_inner_steps: inner steps at evaluation (default: ``inner_steps``; MAML used 10).
        first_order: drop second-order terms (FOMAML).
        checkpoint: recompute inner-loop activations in the backward pass to save memory.
        task, batching: see :class:`Learner`.

    Example::

        learner = MAML(Conv4(out_features=5), inner_lr=0.4, inner_steps=1)
        metrics = learner.meta_backward(tasks.sample(32, generator))
        outer_optimizer.step()

    References: Finn, Abbeel & Levine 2017, "Model-Agnostic Meta-Learning for Fast Adaptation
    of Deep Networks".
    """

    SPACE = {"inner_lr": {"float": [1e-3, 1.0], "log": True}, "inner_steps": {"int": [1, 10]}}

    def __init__(self, model: nn.Module, inner_lr: float = 0.4, inner_steps: int = 1,
                 eval_inner_steps: int | None = None, first_order: bool = False,
                 checkpoint: bool = False, task: str = "classification", batching: str = "auto"):
        super().__init__(model, task, batching)
        name = type(self).__name__
        check_positive(name, "inner_lr", inner_lr)
        check_positive(name, "inner_steps", inner_steps, int)
        if eval_inner_steps is not None:
            check_positive(name, "eval_inner_steps", eval_inner_steps, int)
        self.inner_lr, self.inner_steps = float(inner_lr), inner_steps
        self.eval_inner_steps = eval_inner_steps or inner_steps
        self.first_order, self.checkpoint = bool(first_order), bool(checkpoint)

    def adapts(self, name: str) -> bool:
        """Whether the inner loop updates parameter ``name`` (all of them, for MAML)."""
        return True

    def learning_rates(self, meta: dict[str, Tensor]):
        """The inner step size: a float, or a per-parameter dict for Meta-SGD."""
        return self.inner_lr

    def adapt(self, support_x: Tensor, support_y: Tensor, steps: int | None = None,
              meta: dict[str, Tensor] | None = None, training: bool = False) -> dict[str, Tensor]:
        """The network's parameters after adapting to one task's support set."""
        meta = self.meta_params() if meta is None else meta
        params = self.model_params(meta)

        def support_loss(p):
            return self.loss_fn(functional_forward(self.model, p, support_x), support_y)

        steps = steps or (self.inner_steps if training else self.eval_inner_steps)
        return inner_sgd(support_loss, params, steps, self.learning_rates(meta),
                         first_order=self.first_order or not training,
                         checkpoint=self.checkpoint and training, adapt=self.adapts)

    def predict(self, params: dict[str, Tensor], x: Tensor) -> Tensor:
        """Outputs of the network with (adapted) ``params`` on inputs ``x``."""
        return functional_forward(self.model, params, x)

    def task_loss(self, meta, support_x, support_y, query_x, query_y, training):
        adapted = self.adapt(support_x, support_y, meta=meta, training=training)
        out = self.predict(adapted, query_x)
        loss = self.loss_fn(out, query_y)
        return loss, query_metrics(self.task, out, query_y, loss)


class FOMAML(MAML):
    """First-order MAML: :class:`MAML` with ``first_order=True``."""

    def __init__(self, model: nn.Module, **kwargs):
        kwargs.setdefault("first_order", True)
        super().__init__(model, **kwargs)


class ANIL(MAML):
    """Almost No Inner Loop: only the head (``head.*`` parameters) is adapted per task.

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
    """Meta-SGD: MAML plus a learned inner learning rate for every parameter coordinate.

    The learned rates are the first learned optimizer: ``params - lr ⊙ grad`` with ``lr`` in ω.

    References: Li et al. 2017, "Meta-SGD: Learning to Learn Quickly for Few-Shot Learning".
    """

    SPACE = {"inner_lr": {"float": [1e-3, 1.0], "log": True}}

    def __init__(self, model: nn.Module, inner_lr: float = 0.4, **kwargs):
        super().__init__(model, inner_lr=inner_lr, **kwargs)
        self.inner_lrs = nn.ParameterDict({
            n.replace(".", "__"): nn.Parameter(torch.full_like(p, self.inner_lr))
            for n, p in model.named_parameters()
        })

    def learning_rates(self, meta):
        return {k[len("inner_lrs."):].replace("__", "."): v for k, v in meta.items()
                if k.startswith("inner_lrs.")}


class Reptile(MAML):
    """Reptile: move the initialization toward the weights adapted to each task.

    The meta-gradient written to ``.grad`` is ``mean_tasks(params - adapted)``, so an outer SGD
    step of size ε gives Reptile's update ``params + ε (adapted - params)``.

    References: Nichol, Achiam & Schulman 2018, "On First-Order Meta-Learning Algorithms".
    """

    SPACE = {"inner_lr": {"float": [1e-3, 1.0], "log": True}, "inner_steps": {"int": [1, 20]}}

    def __init__(self, model: nn.Module, inner_lr: float = 0.1, inner_steps: int = 5, **kwargs):
        kwargs["first_order"] = True
        super().__init__(model, inner_lr=inner_lr, inner_steps=inner_steps, **kwargs)

    def meta_backward(self, batch: TaskBatch) -> dict[str, float]:
        params = self.model_params(self.meta_params())
        total = {n: torch.zeros_like(p) for n, p in params.items()}
        metrics: dict[str, list] = {}
        for sx, sy, qx, qy in zip(*batch.tensors):
            adapted = self.adapt(sx, sy, meta=self.meta_params(), training=False, steps=self.inner_steps)
            for n in total:
                total[n] += (params[n] - adapted[n]).detach()
            with torch.no_grad():  # training metrics: the query set after the training adaptation
                out = self.predict(adapted, qx)
                for k, v in query_metrics(self.task, out, qy, self.loss_fn(out, qy)).items():
                    metrics.setdefault(k, []).append(v)
        for n, p in params.items():
            p.grad = total[n] / len(batch) if p.grad is None else p.grad + total[n] / len(batch)
        return {k: torch.stack(v).mean().item() for k, v in metrics.items()}


class iMAML(MAML):
    """Implicit MAML: the inner problem is regularised toward ω and differentiated implicitly.

    Inner problem: ``min_φ L_support(φ) + reg/2 ||φ - ω||²``, approximately solved with
    ``inner_steps`` of gradient descent. The meta-gradient ``(I + H/reg)^{-1} ∇L_query(φ)`` is
    computed with ``cg_steps`` of conjugate gradient, never backpropagating through the inner
    loop, so memory does not grow with ``inner_steps``.

    References: Rajeswaran, Finn, Kakade & Levine 2019, "Meta-Learning with Implicit Gradients".
    """

    SPACE = {"inner_lr": {"float": [1e-3, 1.0], "log": True}, "reg": {"float": [0.1, 10.0], "log": True}}

    def __init__(self, model: nn.Module, inner_lr: float = 0.1, inner_steps: int = 10,
                 reg: float = 1.0, cg_steps: int = 5, method: str = "cg", **kwargs):
        kwargs["first_order"] = True
        super().__init__(model, inner_lr=inner_lr, inner_steps=inner_steps, **kwargs)
        check_positive("iMAML", "reg", reg)
        check_positive("iMAML", "cg_steps", cg_steps, int)
        self.reg, self.cg_steps, self.method = float(reg), cg_steps, method

    def _solve(self, support_x, support_y, init, steps):
        def inner(p):
            fit = self.loss_fn(functional_forward(self.model, p, support_x), support_y)
            return fit + 0.5 * self.reg * sum(((p[k] - init[k].detach()) ** 2).sum() for k in p)

        return inner_sgd(inner, dict(init), steps, self.inner_lr, first_order=True)

    def adapt(self, support_x, support_y, steps=None, meta=None, training=False):
        init = self.model_params(self.meta_params() if meta is None else meta)
        steps = steps or (self.inner_steps if training else self.eval_inner_steps)
        return {k: v.detach() for k, v in self._solve(support_x, support_y, init, steps).items()}

    def meta_backward(self, batch: TaskBatch) -> dict[str, float]:
        params = self.model_params(self.meta_params())
        metrics: dict[str, list] = {}
        for sx, sy, qx, qy in zip(*batch.tensors):
            solution = self.adapt(sx, sy, meta=self.meta_params(), training=True)

            def inner_loss(p, m, sx=sx, sy=sy):
                fit = self.loss_fn(functional_forward(self.model, p, sx), sy)
                return fit + 0.5 * self.reg * sum(((p[k] - m[k]) ** 2).sum() for k in p)

            def outer_loss(p, m, qx=qx, qy=qy):
                return self.loss_fn(functional_forward(self.model, p, qx), qy)

            grads = implicit_grad(inner_loss, outer_loss, solution, params, self.method, self.cg_steps)
            for n, p in params.items():
                g = grads[n] / len(batch)
                p.grad = g if p.grad is None else p.grad + g
            with torch.no_grad():
                out = functional_forward(self.model, solution, qx)
                for k, v in query_metrics(self.task, out, qy, self.loss_fn(out, qy)).items():
                    metrics.setdefault(k, []).append(v)
        return {k: torch.stack(v).mean().item() for k, v in metrics.items()}
