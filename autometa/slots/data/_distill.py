"""Dataset-distillation fillers of the data slot: ω is a small synthetic training set (and step sizes).

- :class:`DD` (``dd``): unroll ``steps`` gradient steps of a network trained on the synthetic images with
  learned step sizes, and move images and step sizes to lower the real-data loss after them; the
  network starts from a fresh random initialisation every iteration (``init="random"``) or always the
  same one (``init="fixed"``) (Wang et al. 2018).
- :class:`DC` (``dc``): match, class by class, the gradient of the loss on synthetic images to that on
  real images with the per-output-channel cosine distance, alternating with training the network on
  the synthetic set (Zhao et al. 2021); the published outer/inner loop counts per ``ipc``.
- :class:`DSA` (``dsa``): DC with the same differentiable augmentation applied to the real and the
  synthetic batch (Zhao & Bilen 2021).
- :class:`DM` (``dm``): match the mean embedding of real and synthetic images of each class under
  randomly initialised networks (Zhao & Bilen 2023).
- :class:`MTT` (``mtt``): train experts on real data, then make ``syn_steps`` steps on the synthetic set
  with a learned step size from a point of an expert trajectory land near the expert's point
  ``expert_epochs`` later (Cazenavette et al. 2022).
"""

from __future__ import annotations

import time
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import functional_call

from autometa.errors import ConfigError, NumericalError
from autometa.slots.data._augment import check_strategy, dsa
from autometa.slots.data._base import (
    DataFiller,
    check_int,
    check_positive,
    check_training_set,
    per_class_labels,
    real_per_class,
)
from autometa.slots.data._convnet import build_convnet

#: Zhao et al. 2021's (outer_loop, inner_loop) per images-per-class (``get_loops`` of the reference code)
DC_LOOPS = {1: (1, 1), 10: (10, 50), 20: (20, 25), 30: (30, 20), 40: (40, 15), 50: (50, 10)}


def gradient_match_distance(grads_syn, grads_real) -> Tensor:
    """Zhao et al.'s layer-wise distance: for every weight tensor, the sum over output channels (rows of
    the gradient reshaped ``(out, -1)``) of ``1 - cos``; bias and normalisation vectors count zero.

    References: Zhao, Mopuri & Bilen, "Dataset Condensation with Gradient Matching", ICLR 2021 (eq. 10).
    """
    total = None
    for gs, gr in zip(grads_syn, grads_real):
        if gs.ndim < 2:
            continue
        a, b = gs.reshape(gs.shape[0], -1), gr.reshape(gr.shape[0], -1)
        term = (1 - (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1) + 1e-6)).sum()
        total = term if total is None else total + term
    if total is None:
        raise ConfigError("gradient_match_distance found no weight tensor (ndim >= 2) to match.")
    return total


def _class_index(y: Tensor, classes: int) -> list[Tensor]:
    y = y.cpu()
    return [torch.nonzero(y == c).view(-1) for c in range(classes)]


def _real_batch(x: Tensor, index: Tensor, n: int, g: torch.Generator) -> Tensor:
    """``n`` random rows of ``x`` among ``index`` (a CPU index; the draw is on the CPU on every device)."""
    return x[index[torch.randperm(len(index), generator=g)[:n]].to(x.device)]


def _seed(g: torch.Generator) -> int:
    return int(torch.randint(0, 2 ** 31 - 1, (1,), generator=g))


def _train_network(net, optimizer, x: Tensor, y: Tensor, epochs: int, g: torch.Generator, augment: str | None,
                   batch_size: int = 256) -> None:
    """``epochs`` passes of minibatch SGD over ``(x, y)`` (the reference's ``epoch('train', ...)``)."""
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=g)
        for start in range(0, len(x), batch_size):
            index = order[start:start + batch_size].to(x.device)
            batch = x[index] if augment is None else dsa(x[index], augment, _seed(g), shared=False)
            loss = F.cross_entropy(net(batch), y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()


class _Distiller(DataFiller):
    learned: ClassVar[bool] = True
    INITS: ClassVar[tuple] = ("real", "noise")

    def _common(self, iterations, lr_images, batch_real, init, augment, net, log_every, time_budget_s=None):
        name = type(self).__name__
        if time_budget_s is not None:
            check_positive(name, "time_budget_s", time_budget_s)
        self.time_budget_s = time_budget_s
        check_int(name, "iterations", iterations, low=0)
        check_positive(name, "lr_images", lr_images)
        check_int(name, "batch_real", batch_real)
        check_int(name, "log_every", log_every)
        if isinstance(init, Tensor):
            if init.ndim != 4 or not init.is_floating_point():
                raise ConfigError(f"The `init` images of {name} must be a float tensor (classes * ipc, channels, "
                                  f"height, width). Got {init.dtype} {tuple(init.shape)}.")
        elif init not in self.INITS:
            raise ConfigError(f"The `init` of {name} must be one of {self.INITS} or a tensor of starting images. "
                              f"Got {init!r}.")
        if augment is not None:
            check_strategy(augment)
        if net is not None and not isinstance(net, dict):
            raise ConfigError(f"The `net` of {name} must be a mapping of ConvNet arguments (width, depth, norm, "
                              f"pooling) or null. Got {net!r}.")
        self.iterations, self.lr_images, self.batch_real, self.init = iterations, lr_images, batch_real, init
        self.augment, self.net, self.log_every = augment, net, log_every

    def _start_matching(self, x: Tensor, y: Tensor):
        """What DC, DSA and DM begin a fit with: the class count, the seeded generator, the initial images,
        the per-class indices of the real images, SGD (momentum 0.5) on the images, the CPU and wall clocks."""
        classes = check_training_set(x, y, self.ipc, type(self).__name__)
        g = torch.Generator().manual_seed(self.seed)
        self._set(self._initial_images(x, y, classes, g), per_class_labels(classes, self.ipc))
        optimizer = torch.optim.SGD([self.images], lr=self.lr_images, momentum=0.5)
        self.history = []
        return classes, g, _class_index(y, classes), optimizer, time.process_time(), time.perf_counter()

    def _class_pair(self, x: Tensor, by_class: list[Tensor], c: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
        """Class ``c``'s real batch and synthetic images, both given one shared DSA draw when ``augment`` is set."""
        real = _real_batch(x, by_class[c], self.batch_real, g)
        syn = self.images[c * self.ipc:(c + 1) * self.ipc]
        if self.augment is not None:
            shared = _seed(g)
            real, syn = dsa(real, self.augment, shared), dsa(syn, self.augment, shared)
        return real, syn

    def _initial_images(self, x: Tensor, y: Tensor, classes: int, g: torch.Generator) -> Tensor:
        if isinstance(self.init, Tensor):  # a warm start: images of another fit (normalised as x is)
            shape = (classes * self.ipc, *x.shape[1:])
            if tuple(self.init.shape) != shape:
                raise ConfigError(f"{type(self).__name__} starts from given images of shape {tuple(self.init.shape)}, "
                                  f"but {self.ipc} per class of {classes} classes of {tuple(x.shape[1:])} images is "
                                  f"{shape}. Start from a set fitted with the same ipc on the same dataset.")
            return self.init.detach().to(x.device, x.dtype).clone()
        if self.init == "real":
            return real_per_class(x, y, classes, self.ipc, g).clone()
        return torch.randn((classes * self.ipc, *x.shape[1:]), generator=g, dtype=x.dtype).to(x.device)

    def _fresh_net(self, x: Tensor, classes: int, iteration: int):
        return build_convnet(x.shape[1:], classes, self.net, seed=self.seed * 1_000_003 + iteration, dtype=x.dtype,
                             device=x.device)

    def _iterations(self, wall_start: float):
        """Iterations 1..``iterations``, ending early (after at least one) once ``time_budget_s`` of wall time
        has passed since ``wall_start``; ``self.budget_stop`` says whether it did."""
        self.budget_stop = False
        for iteration in range(1, self.iterations + 1):
            if (iteration > 1 and self.time_budget_s is not None
                    and time.perf_counter() - wall_start > self.time_budget_s):
                self.budget_stop = True
                return
            yield iteration

    def _record(self, iteration: int, loss: float, start: float, log) -> None:
        if loss != loss:
            raise NumericalError(f"{type(self).__name__} diverged at iteration {iteration} (loss {loss}); lower "
                                 f"lr_images (now {self.lr_images}).")
        entry = {"iteration": iteration, "loss": loss, "cpu_s": time.process_time() - start}
        self.history.append(entry)
        if log is not None and (iteration % self.log_every == 0 or iteration == self.iterations):
            log(f"{type(self).__name__} iteration {iteration}/{self.iterations}: loss {loss:.4f} "
                f"({entry['cpu_s']:.0f} CPU s)")


class DC(_Distiller):
    """Dataset condensation by gradient matching (see the module docstring).

    Args:
        ipc: synthetic images per class.
        iterations: outer iterations, each with a freshly initialised ConvNet (published: 1000).
        outer_loop, inner_loop: matching steps per network and training epochs on the synthetic set between
            them (None: Zhao et al.'s published values for ``ipc`` in 1, 10, 20, 30, 40, 50).
        lr_images: SGD (momentum 0.5) step on the images (published 0.1).
        lr_net: SGD step of the network trained on the synthetic set (published 0.01).
        batch_real: real images per class per matching step (published 256).
        init: ``"real"`` (random real images; the default here, because it converges in far fewer
            iterations), ``"noise"`` (Gaussian; the reference code's default for DC and DSA), or a tensor
            ``(classes * ipc, c, h, w)`` of starting images normalised as ``x`` is (a warm start: another
            fit's set; a study config names its ``.npz`` instead).
        augment: a DSA strategy applied to both batches with one shared draw (None for DC).
        net: ConvNet arguments (default ConvNet-3, width 128, instance norm, average pooling).
        time_budget_s: stop after the iteration during which this much wall time has passed since ``fit``
            began (every distiller takes it; ``budget_stop`` and ``len(history)`` say where it stopped).

    References: Zhao, Mopuri & Bilen, "Dataset Condensation with Gradient Matching", ICLR 2021.
    """

    def __init__(self, ipc: int = 1, iterations: int = 1000, outer_loop: int | None = None,
                 inner_loop: int | None = None, lr_images: float = 0.1, lr_net: float = 0.01, batch_real: int = 256,
                 init: str | Tensor = "real", augment: str | None = None, net: dict | None = None, log_every: int = 10,
                 seed: int = 0, time_budget_s: float | None = None):
        super().__init__(ipc, seed)
        self._common(iterations, lr_images, batch_real, init, augment, net, log_every, time_budget_s)
        check_positive(type(self).__name__, "lr_net", lr_net)
        if (outer_loop is None or inner_loop is None) and ipc not in DC_LOOPS:
            raise ConfigError(f"{type(self).__name__} has published loop counts for ipc in {sorted(DC_LOOPS)} only. "
                              f"Got ipc={ipc}; pass outer_loop and inner_loop.")
        for key, value in (("outer_loop", outer_loop), ("inner_loop", inner_loop)):
            if value is not None:
                check_int(type(self).__name__, key, value, low=1 if key == "outer_loop" else 0)
        self.outer_loop, self.inner_loop, self.lr_net = outer_loop, inner_loop, lr_net

    def loops(self) -> tuple[int, int]:
        outer, inner = DC_LOOPS.get(self.ipc, (None, None))
        return self.outer_loop or outer, inner if self.inner_loop is None else self.inner_loop

    def fit(self, x, y, log=None):
        classes, g, by_class, optimizer, start, wall = self._start_matching(x, y)
        for iteration in self._iterations(wall):
            loss = self.outer_iteration(x, by_class, classes, optimizer, iteration, g)
            self._record(iteration, loss, start, log)
        return self

    def outer_iteration(self, x: Tensor, by_class: list[Tensor], classes: int, optimizer, iteration: int,
                        g: torch.Generator) -> float:
        """One outer iteration: a fresh network, ``outer_loop`` matching steps on the images with
        ``inner_loop`` epochs of training the network on the synthetic set between them; the mean loss."""
        outer, inner = self.loops()
        net = self._fresh_net(x, classes, iteration)
        net.train()
        net_optimizer = torch.optim.SGD(net.parameters(), lr=self.lr_net)
        # the distance ignores bias and normalisation vectors, so only weight gradients are formed
        params = [p for p in net.parameters() if p.ndim >= 2]
        total = 0.0
        for step in range(outer):
            optimizer.zero_grad(set_to_none=True)
            for c in range(classes):
                real, syn = self._class_pair(x, by_class, c, g)
                target = torch.full((len(real),), c, device=x.device)
                grads_real = torch.autograd.grad(F.cross_entropy(net(real), target), params)
                grads_syn = torch.autograd.grad(F.cross_entropy(net(syn), target[:len(syn)]), params,
                                                create_graph=True)
                loss = gradient_match_distance(grads_syn, [t.detach() for t in grads_real])
                loss.backward()  # class by class: the same sum of gradients, one graph alive at a time
                total += loss.item()
            optimizer.step()
            if step == outer - 1:
                break
            _train_network(net, net_optimizer, self.images.detach(), self.labels, inner, g, self.augment)
        return total / (outer * classes)


class DSA(DC):
    """DC with differentiable siamese augmentation (default: every DSA operation; a study removes flips for
    digits). References: Zhao & Bilen, "Dataset Condensation with Differentiable Siamese Augmentation",
    ICML 2021."""

    def __init__(self, ipc: int = 1, iterations: int = 1000, outer_loop: int | None = None,
                 inner_loop: int | None = None, lr_images: float = 0.1, lr_net: float = 0.01, batch_real: int = 256,
                 init: str | Tensor = "real", augment: str | None = "color_crop_cutout_flip_scale_rotate",
                 net: dict | None = None, log_every: int = 10, seed: int = 0, time_budget_s: float | None = None):
        super().__init__(ipc, iterations, outer_loop, inner_loop, lr_images, lr_net, batch_real, init, augment, net,
                         log_every, seed, time_budget_s)


class DM(_Distiller):
    """Distribution matching: per class, the squared distance between the mean embeddings of a real batch
    and the synthetic images under a fresh random ConvNet, both augmented with one shared DSA draw.

    Args: as :class:`DC` (published: 20000 iterations, lr_images 1.0, batch_real 256, DSA augmentation).

    References: Zhao & Bilen, "Dataset Condensation with Distribution Matching", WACV 2023.
    """

    def __init__(self, ipc: int = 1, iterations: int = 20000, lr_images: float = 1.0, batch_real: int = 256,
                 init: str | Tensor = "real", augment: str | None = "color_crop_cutout_flip_scale_rotate",
                 net: dict | None = None, log_every: int = 100, seed: int = 0, time_budget_s: float | None = None):
        super().__init__(ipc, seed)
        self._common(iterations, lr_images, batch_real, init, augment, net, log_every, time_budget_s)

    def fit(self, x, y, log=None):
        classes, g, by_class, optimizer, start, wall = self._start_matching(x, y)
        for iteration in self._iterations(wall):
            net = self._fresh_net(x, classes, iteration)
            net.requires_grad_(False)
            optimizer.zero_grad(set_to_none=True)
            reals, syns = [], []
            for c in range(classes):
                real, syn = self._class_pair(x, by_class, c, g)
                reals.append(real)
                syns.append(syn)
            loss = mean_embedding_distances(net, reals, syns).sum()
            loss.backward()
            optimizer.step()
            self._record(iteration, loss.item() / classes, start, log)
        return self


def mean_embedding_distances(net, reals: list[Tensor], syns: list[Tensor]) -> Tensor:
    """DM's loss per class ``c``: ``|mean embed(reals[c]) - mean embed(syns[c])|²`` (gradient to the synthetic
    images only). All classes go through the network in one batch each for real and synthetic images: the
    ConvNet's instance norm acts per image, so this equals the reference's class-by-class loop (tested) at a
    tenth of the kernel launches."""
    with torch.no_grad():
        real = net.embed(torch.cat(reals)).split([len(r) for r in reals])
    syn = net.embed(torch.cat(syns)).split([len(s) for s in syns])
    return torch.stack([(r.mean(0) - s.mean(0)).pow(2).sum() for r, s in zip(real, syn)])


def unrolled_real_loss(net, params: dict[str, Tensor], x_syn: Tensor, y_syn: Tensor, lrs: Tensor, x_real: Tensor,
                       y_real: Tensor) -> Tensor:
    """DD's objective: the loss on ``(x_real, y_real)`` after ``len(lrs)`` gradient steps on the synthetic set
    (step ``i`` with step size ``lrs[i]``), differentiable with respect to ``x_syn``, ``lrs`` and ``params``."""
    names = list(params)
    for lr in lrs:
        loss = F.cross_entropy(functional_call(net, params, (x_syn,)), y_syn)
        grads = torch.autograd.grad(loss, [params[k] for k in names], create_graph=True)
        params = {k: params[k] - lr * grad for k, grad in zip(names, grads)}
    return F.cross_entropy(functional_call(net, params, (x_real,)), y_real)


class DD(_Distiller):
    """Dataset distillation by unrolled optimisation with learned step sizes.

    Args:
        steps: gradient steps per epoch on the synthetic set; epochs: passes (``steps * epochs`` unrolled
            steps, each with its own learned step size, initialised to ``lr_init``).
        init_net: ``"random"`` (a fresh network initialisation every iteration) or ``"fixed"`` (always the
            initialisation drawn from ``seed``).
        lr_images: Adam step on the images and step sizes.
        batch_real: real images (all classes) per iteration.
        init: ``"noise"`` (Wang et al.), ``"real"`` or starting images (as :class:`DC`).

    References: Wang, Zhu, Torralba & Efros, "Dataset Distillation", arXiv:1811.10959, 2018.
    """

    def __init__(self, ipc: int = 1, iterations: int = 400, steps: int = 10, epochs: int = 3, lr_init: float = 0.02,
                 init_net: str = "random", lr_images: float = 0.01, batch_real: int = 1024,
                 init: str | Tensor = "noise", net: dict | None = None, log_every: int = 10, seed: int = 0,
                 time_budget_s: float | None = None):
        super().__init__(ipc, seed)
        self._common(iterations, lr_images, batch_real, init, None, net, log_every, time_budget_s)
        check_int("DD", "steps", steps)
        check_int("DD", "epochs", epochs)
        check_positive("DD", "lr_init", lr_init)
        if init_net not in ("random", "fixed"):
            raise ConfigError(f"The `init_net` of DD must be 'random' or 'fixed'. Got {init_net!r}.")
        self.steps, self.epochs, self.lr_init, self.init_net = steps, epochs, lr_init, init_net
        self.lrs = torch.nn.Parameter(torch.full((steps * epochs,), float(lr_init)))

    def step_sizes(self, meta=None):
        return self.resolve(meta).get("lrs", self.lrs)

    def fit(self, x, y, log=None):
        classes = check_training_set(x, y, self.ipc, "DD")
        g = torch.Generator().manual_seed(self.seed)
        self._set(self._initial_images(x, y, classes, g), per_class_labels(classes, self.ipc))
        self.lrs = torch.nn.Parameter(torch.full((self.steps * self.epochs,), float(self.lr_init), dtype=x.dtype,
                                                 device=x.device))
        optimizer = torch.optim.Adam([self.images, self.lrs], lr=self.lr_images)
        self.history, start, wall = [], time.process_time(), time.perf_counter()
        for iteration in self._iterations(wall):
            net = self._fresh_net(x, classes, 0 if self.init_net == "fixed" else iteration)
            params = {k: v.detach().requires_grad_(True) for k, v in net.named_parameters()}
            index = torch.randperm(len(x), generator=g)[:self.batch_real].to(x.device)
            loss = unrolled_real_loss(net, params, self.images, self.labels, self.lrs, x[index], y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            self._record(iteration, loss.item(), start, log)
        return self


class MTT(_Distiller):
    """Matching training trajectories.

    Args:
        experts: expert networks trained on real data (SGD ``expert_lr``, DSA augmentation) for
            ``max_start_epoch + expert_epochs`` epochs over ``expert_images`` real images (None: all).
        syn_steps: student steps on the synthetic set per iteration, from expert epoch ``start`` (random,
            ``< max_start_epoch``), matched to the expert ``expert_epochs`` later.
        lr_init, lr_lr: the learned student step size's initial value and its SGD step (momentum 0.5).
        lr_images: SGD (momentum 0.5) step on the images.

    References: Cazenavette et al., "Dataset Distillation by Matching Training Trajectories", CVPR 2022.
    """

    def __init__(self, ipc: int = 1, iterations: int = 5000, experts: int = 5, expert_epochs: int = 2,
                 max_start_epoch: int = 5, expert_lr: float = 0.01, expert_images: int | None = None,
                 syn_steps: int = 20, lr_init: float = 0.01, lr_lr: float = 1e-5, lr_images: float = 100.0,
                 batch_real: int = 256, init: str | Tensor = "real",
                 augment: str | None = "color_crop_cutout_flip_scale_rotate", net: dict | None = None,
                 log_every: int = 10, seed: int = 0, time_budget_s: float | None = None):
        super().__init__(ipc, seed)
        self._common(iterations, lr_images, batch_real, init, augment, net, log_every, time_budget_s)
        for key, value in (("experts", experts), ("expert_epochs", expert_epochs),
                           ("max_start_epoch", max_start_epoch), ("syn_steps", syn_steps)):
            check_int("MTT", key, value)
        if expert_images is not None:
            check_int("MTT", "expert_images", expert_images)
        for key, value in (("expert_lr", expert_lr), ("lr_init", lr_init), ("lr_lr", lr_lr)):
            check_positive("MTT", key, value)
        self.experts, self.expert_epochs, self.max_start_epoch = experts, expert_epochs, max_start_epoch
        self.expert_lr, self.expert_images, self.syn_steps = expert_lr, expert_images, syn_steps
        self.lr_init, self.lr_lr = lr_init, lr_lr
        self.lrs = torch.nn.Parameter(torch.full((1,), float(lr_init)))

    def step_sizes(self, meta=None):
        return self.resolve(meta).get("lrs", self.lrs)

    def trajectories(self, x: Tensor, y: Tensor, classes: int, g: torch.Generator) -> list[list[dict]]:
        """Expert trajectories: for every expert, its parameters at the start and after each epoch."""
        out = []
        for e in range(self.experts):
            net = build_convnet(x.shape[1:], classes, self.net, seed=self.seed * 7919 + 10_000 + e, dtype=x.dtype,
                                device=x.device)
            index = torch.randperm(len(x), generator=g)[:self.expert_images or len(x)].to(x.device)
            optimizer = torch.optim.SGD(net.parameters(), lr=self.expert_lr)
            trajectory = [{k: v.detach().clone() for k, v in net.named_parameters()}]
            for _ in range(self.max_start_epoch + self.expert_epochs):
                _train_network(net, optimizer, x[index], y[index], 1, g, self.augment, self.batch_real)
                trajectory.append({k: v.detach().clone() for k, v in net.named_parameters()})
            out.append(trajectory)
        return out

    def fit(self, x, y, log=None):
        classes = check_training_set(x, y, self.ipc, "MTT")
        g = torch.Generator().manual_seed(self.seed)
        self.history, start, wall = [], time.process_time(), time.perf_counter()
        experts = self.trajectories(x, y, classes, g)
        self._set(self._initial_images(x, y, classes, g), per_class_labels(classes, self.ipc))
        self.lrs = torch.nn.Parameter(torch.full((1,), float(self.lr_init), dtype=x.dtype, device=x.device))
        image_opt = torch.optim.SGD([self.images], lr=self.lr_images, momentum=0.5)
        lr_opt = torch.optim.SGD([self.lrs], lr=self.lr_lr, momentum=0.5)
        net = build_convnet(x.shape[1:], classes, self.net, seed=self.seed, dtype=x.dtype, device=x.device)
        for iteration in self._iterations(wall):
            trajectory = experts[int(torch.randint(0, len(experts), (1,), generator=g))]
            begin = int(torch.randint(0, self.max_start_epoch, (1,), generator=g))
            loss = self.matching_loss(net, trajectory[begin], trajectory[begin + self.expert_epochs], g)
            image_opt.zero_grad(set_to_none=True)
            lr_opt.zero_grad(set_to_none=True)
            loss.backward()
            image_opt.step()
            lr_opt.step()
            self._record(iteration, loss.item(), start, log)
        return self

    def matching_loss(self, net, begin: dict, target: dict, g: torch.Generator) -> Tensor:
        """``|θ_student - θ_target|² / |θ_begin - θ_target|²`` after ``syn_steps`` student steps from θ_begin."""
        params = {k: v.detach().clone().requires_grad_(True) for k, v in begin.items()}
        names = list(params)
        for _ in range(self.syn_steps):
            x = self.images if self.augment is None else dsa(self.images, self.augment, _seed(g), shared=False)
            loss = F.cross_entropy(functional_call(net, params, (x,)), self.labels)
            grads = torch.autograd.grad(loss, [params[k] for k in names], create_graph=True)
            params = {k: params[k] - self.lrs[0] * grad for k, grad in zip(names, grads)}
        num = sum((params[k] - target[k]).pow(2).sum() for k in names)
        den = sum((begin[k] - target[k]).pow(2).sum() for k in names)
        return num / den
