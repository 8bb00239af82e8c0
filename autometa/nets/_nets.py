"""Networks used functionally: parameters are a dict of tensors applied with ``functional_call``.

Batch norm keeps no running statistics (:class:`BatchNorm2d`): every forward pass
normalises with the statistics of the examples it is given, as MAML and ProtoNet do. There
is no buffer to mutate, so a network gives the same result whether tasks are processed one
by one, functionally, or batched with ``vmap`` (each task normalised by its own statistics).

A user's own network may hold buffers, such as the running statistics of ``nn.BatchNorm1d``.
Learners run it inside :func:`no_buffer_updates`: in ``train()`` mode batch norm uses the
statistics of the examples it is given (as above), in ``eval()`` mode the stored running
statistics; neither mode changes a buffer.
"""

from __future__ import annotations

import copy
import threading
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from autometa.errors import ConfigError


class BatchNorm2d(nn.Module):
    """Batch norm that always normalises with the statistics of the batch it is given.

    Under ``torch.func.vmap`` (tasks batched) it is computed with elementary operations: in
    torch 2.13 the second-order gradient of the fused ``F.batch_norm`` kernel under vmap differs
    from the looped one by several percent (``tests/nets/test_nets.py`` checks both paths against
    each other). Outside vmap the fused kernel is used: it is about 30% faster for a MAML
    meta-step of Conv4 on a CPU.
    """

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))

    def forward(self, x: Tensor) -> Tensor:
        if not _is_batched(x):
            return F.batch_norm(x, None, None, self.weight, self.bias, training=True, eps=self.eps)
        mean = x.mean(dim=(0, 2, 3), keepdim=True)
        var = (x - mean).pow(2).mean(dim=(0, 2, 3), keepdim=True)
        scale = self.weight.view(1, -1, 1, 1) * torch.rsqrt(var + self.eps)
        return (x - mean) * scale + self.bias.view(1, -1, 1, 1)


def _is_batched(x: Tensor) -> bool:
    """Whether ``x`` is seen through ``torch.func.vmap`` (possibly under grad transforms)."""
    from torch._C._functorch import get_unwrapped, is_batchedtensor, is_functorch_wrapped_tensor

    while is_functorch_wrapped_tensor(x):
        if is_batchedtensor(x):
            return True
        x = get_unwrapped(x)
    return False


def conv_block(in_channels: int, out_channels: int, pool: bool = True) -> nn.Sequential:
    """3x3 convolution (padding 1), batch norm with batch statistics, ReLU, 2x2 max-pool."""
    layers = [nn.Conv2d(in_channels, out_channels, 3, padding=1), BatchNorm2d(out_channels), nn.ReLU()]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class Conv4(nn.Module):
    """The four-block convolutional network of MAML and ProtoNet.

    Args:
        in_channels: image channels (1 for Omniglot).
        out_features: size of the linear head (``ways``); ``None`` for an embedding network
            (metric learners), whose output is the flattened features.
        hidden: filters per block (64 in the papers).
        image_size: input height and width, to size the head (28 for Omniglot).

    Parameters are named ``features.*`` and ``head.*``, so ANIL can adapt the head alone.

    References: Vinyals et al. 2016; Finn et al. 2017; Snell et al. 2017.
    """

    def __init__(self, in_channels: int = 1, out_features: int | None = 5, hidden: int = 64,
                 image_size: int = 28, blocks: int = 4):
        super().__init__()
        if hidden < 1 or blocks < 1:
            raise ConfigError(f"Conv4 needs hidden >= 1 and blocks >= 1. Got hidden={hidden}, blocks={blocks}.")
        chans = [in_channels] + [hidden] * blocks
        self.features = nn.Sequential(*(conv_block(a, b) for a, b in zip(chans, chans[1:])), nn.Flatten())
        side = image_size
        for _ in range(blocks):
            side //= 2
        self.feature_dim = hidden * max(side, 1) ** 2
        self.head = nn.Linear(self.feature_dim, out_features) if out_features else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


class MLP(nn.Module):
    """A fully connected network; ``MLP(1, 1, (40, 40))`` is the MAML sinusoid regressor."""

    def __init__(self, in_features: int = 1, out_features: int | None = 1, hidden: Sequence[int] = (40, 40),
                 activation: str = "relu"):
        super().__init__()
        acts = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}
        if activation not in acts:
            raise ConfigError(f"MLP activation must be one of {sorted(acts)}. Got {activation!r}.")
        if isinstance(hidden, int) or not all(isinstance(h, int) and not isinstance(h, bool) and h >= 1
                                              for h in hidden):
            raise ConfigError(f"The `hidden` of MLP must be a list of layer widths >= 1, e.g. [40, 40]. "
                              f"Got {hidden!r}.")
        sizes = [in_features, *hidden]
        layers: list[nn.Module] = []
        for a, b in zip(sizes, sizes[1:]):
            layers += [nn.Linear(a, b), acts[activation]()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(sizes[-1], out_features) if out_features else nn.Identity()
        self.feature_dim = sizes[-1]

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x.flatten(1) if x.dim() > 2 else x))


def params_of(module: nn.Module) -> dict[str, Tensor]:
    """The module's parameters as a name -> tensor dict (the live tensors, not copies)."""
    return dict(module.named_parameters())


def functional_forward(module: nn.Module, params: dict[str, Tensor], x: Tensor) -> Tensor:
    """``module(x)`` computed with ``params`` in place of its own parameters.

    ``functional_call`` swaps the module's attributes while it runs, so threads calling it on
    one module at once (``batching="threads"``) would see each other's parameters: a thread
    other than the main one runs on its own replica, which shares the module's tensors.
    """
    if threading.current_thread() is not threading.main_thread():
        module = _thread_replica(module)
    return functional_call(module, params, (x,))


_REPLICAS = threading.local()


def _thread_replica(module: nn.Module) -> nn.Module:
    """This thread's copy of ``module``'s structure, holding the very same parameter tensors."""
    replicas = _REPLICAS.__dict__.setdefault("by_module", weakref.WeakKeyDictionary())
    tensors = [*module.parameters(), *module.buffers()]
    # the modes that change what a forward pass does (train/eval, batch norm's running
    # statistics, switched by no_buffer_updates) are part of the key: a replica follows them
    modes = tuple((m.training, getattr(m, "track_running_stats", None)) for m in module.modules())
    key = (tuple(id(t) for t in tensors), modes)
    cached = replicas.get(module)
    if cached is None or cached[0] != key:
        cached = replicas[module] = (key, copy.deepcopy(module, {id(t): t for t in tensors}))
    return cached[1]


@contextmanager
def no_buffer_updates(module: nn.Module) -> Iterator[None]:
    """Run ``module`` without changing any of its buffers.

    Batch norm with running statistics (``nn.BatchNorm1d/2d/3d``) is switched to
    ``track_running_stats=False`` while the block runs: in ``train()`` mode it normalises with
    the statistics of the batch it is given (as MAML does), in ``eval()`` mode with the stored
    running statistics; neither updates them, and ``num_batches_tracked`` stays as it was. Any
    other buffer that the block changes or replaces is restored afterwards. To update running
    statistics, run the network yourself, e.g. ``net.train(); net(x)`` under ``torch.no_grad()``.
    """
    norms = [m for m in module.modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    saved = [(owner, name, buffer, buffer.detach().clone())
             for owner in module.modules() for name, buffer in owner._buffers.items() if buffer is not None]
    for m in norms:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m in norms:
            m.track_running_stats = True
        with torch.no_grad():
            for owner, name, buffer, value in saved:
                owner._buffers[name] = buffer
                if buffer.shape != value.shape:
                    buffer.set_(value)
                elif not torch.equal(buffer, value):
                    buffer.copy_(value)


_NETS = {"conv4": (Conv4, ("in_channels", "out_features", "image_size")),
         "mlp": (MLP, ("in_features", "out_features"))}


def check_model_spec(spec: dict) -> dict:
    """Check a ``model`` section's keys against its network's constructor; return it unchanged.

    Without ``name`` the keys are checked against the union of the networks' arguments (the
    network is chosen by the input shape when the tasks are known).

    Raises:
        ConfigError: an unknown network, or every unknown key with a did-you-mean suggestion.
    """
    from autometa._params import accepted_arguments, bind_arguments, did_you_mean

    if not isinstance(spec, dict):
        raise ConfigError(f"The model section must be a mapping such as {{name: mlp, hidden: [40, 40]}}. Got {spec!r}.")
    if "architecture" in spec:  # a filler of the architecture slot, checked by the run loop (slots sit above nets)
        if set(spec) != {"architecture"}:
            raise ConfigError(f"model.architecture names the whole network; drop the other model keys "
                              f"{sorted(set(spec) - {'architecture'})}.")
        return spec
    rest = {k: v for k, v in spec.items() if k != "name"}
    if "name" not in spec:
        union = set().union(*(accepted_arguments(cls, skip=skip)[0] for cls, skip in _NETS.values()))
        bind_arguments("model", build_net, rest, skip=("spec", "in_shape", "out_features"), extra=union)
        return spec
    name = spec["name"]
    if name not in _NETS:
        raise ConfigError(f"Unknown model {name!r}{did_you_mean(name, _NETS)}; use one of {sorted(_NETS)}.")
    cls, skip = _NETS[name]
    bind_arguments(f"model {name!r}", cls, rest, skip=skip)
    return spec


def build_net(spec: dict, in_shape: tuple[int, ...], out_features: int | None) -> nn.Module:
    """A network from a config's ``model`` section (``name``: ``conv4`` or ``mlp``).

    Raises:
        ConfigError: an unknown network or argument (with a suggestion), an argument of the
            wrong type, or a network that does not fit the inputs.
    """
    spec = dict(spec)
    name = spec.pop("name", "conv4" if len(in_shape) == 3 else "mlp")
    check_model_spec({"name": name, **spec})
    if name == "conv4" and len(in_shape) != 3:
        raise ConfigError(f"conv4 needs image inputs (C, H, W). Got input shape {in_shape}; use model.name=mlp.")
    try:
        if name == "conv4":
            return Conv4(in_shape[0], out_features, image_size=in_shape[-1], **spec)
        return MLP(int(torch.tensor(in_shape).prod()), out_features, **spec)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"model {name!r} cannot be built from {spec} ({type(exc).__name__}: {exc}). "
                          f"Check the types of its arguments, e.g. hidden: [40, 40] for mlp, hidden: 64 for "
                          f"conv4.") from exc
