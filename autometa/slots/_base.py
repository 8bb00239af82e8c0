"""The one interface every kind of meta-knowledge ω plugs into: a :class:`Filler` of a slot.

A *slot* is a replaceable part of learning (the inner optimizer, the loss, ...); a *filler* is
one way to fill it, hand-crafted (SGD, cross-entropy) or learned (an LSTM optimizer, a learned
loss network). Every filler shows two faces:

- :meth:`Filler.space`: its searchable hyperparameters in the search API's grammar (names are
  constructor arguments; a learner prefixes them with the slot: ``optimizer.lr``);
- :meth:`Filler.meta_params`: its differentiable meta-parameters (empty for a fixed rule),
  which learners expose as ``"<slot>.<name>"`` and hypergradient estimators differentiate.

The work of a filler is done by one *pure* method per slot kind, with the meta-parameters passed
explicitly (``meta``), so that estimators, ``torch.func.grad`` and ``vmap`` see ω as an input
rather than as hidden module state:

============  ==========================================================================================
optimizer     ``init(params, meta) -> state``; ``update(grads, state, params, meta) -> (params, state)``
loss          ``loss(outputs, targets, meta) -> per-sample losses``
weighting     ``weighting(losses, outputs, targets, meta) -> per-sample weights``
reward        ``reward(observations, actions, extrinsic, meta) -> per-step rewards``
architecture  ``build_network(in_shape, num_classes, seed) -> nn.Module``; ``genotype(meta) -> Genotype``
augmentation  ``augment(x, y, meta, generator) -> (x, y)`` on images ``(B, C, H, W)``, every random draw
              from ``generator``
data          ``support(meta) -> (x, y)``: the synthetic or selected training set (``fit(x, y)`` builds it)
============  ==========================================================================================

``meta=None`` means "my own current meta-parameters", for use outside an estimator.
"""

from __future__ import annotations

import inspect
from typing import ClassVar

from torch import Tensor, nn

from autometa._params import bind_arguments, did_you_mean
from autometa.errors import ConfigError

SLOTS = ("optimizer", "loss", "weighting", "reward", "architecture", "augmentation", "data")

# slot -> name -> filler class; filled by register_filler (the slot packages register theirs)
FILLERS: dict[str, dict[str, type[Filler]]] = {slot: {} for slot in SLOTS}


class Filler(nn.Module):
    """Base class of every filler.

    Subclasses set :attr:`slot`, :attr:`SPACE` (searchable constructor arguments, in the search
    API's grammar) and implement their slot's pure method. Constructor arguments are stored
    unchanged (scikit-learn style) so that :meth:`config` can rebuild the filler.
    """

    slot: ClassVar[str] = ""
    #: searchable hyperparameters: constructor argument -> search-space entry
    SPACE: ClassVar[dict] = {}

    @classmethod
    def space(cls) -> dict:
        """The searchable hyperparameters (names are constructor arguments, unprefixed)."""
        return {k: dict(v) for k, v in cls.SPACE.items()}

    def meta_params(self) -> dict[str, Tensor]:
        """ω of this filler as a name -> tensor dict (the live parameters; empty for a fixed rule)."""
        return {k: v for k, v in self.named_parameters() if v.requires_grad}

    def resolve(self, meta: dict[str, Tensor] | None) -> dict[str, Tensor]:
        """``meta`` if given, else this filler's own meta-parameters."""
        return self.meta_params() if meta is None else meta

    def config(self) -> dict:
        """``{"name": ..., **constructor arguments}``: enough to rebuild this filler by :func:`build_filler`."""
        out = {"name": registered_name(type(self))}
        for name in inspect.signature(type(self).__init__).parameters:
            if name != "self" and hasattr(self, name):
                value = getattr(self, name)
                out[name] = list(value) if isinstance(value, tuple) else value
        return out

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "name")


def register_filler(name: str, cls: type[Filler]) -> type[Filler]:
    """Make ``cls`` available to configs as ``learner.<cls.slot>: {name: <name>, ...}``.

    Works for fillers written outside autometa too::

        @register_filler("clipped_sgd") ... or register_filler("clipped_sgd", ClippedSGD)
    """
    if not (isinstance(cls, type) and issubclass(cls, Filler)) or cls.slot not in FILLERS:
        raise ConfigError(f"register_filler needs a Filler subclass whose `slot` is one of {SLOTS}. "
                          f"Got {cls!r} with slot {getattr(cls, 'slot', None)!r}.")
    FILLERS[cls.slot][name.lower()] = cls
    return cls


def registered_name(cls: type[Filler]) -> str:
    """The name a filler class is registered under (its class name, lower-cased, if none)."""
    for name, klass in FILLERS.get(cls.slot, {}).items():
        if klass is cls:
            return name
    return cls.__name__.lower()


def build_filler(slot: str, spec) -> Filler:
    """A filler of ``slot`` from a config entry: a name (``"adam"``), a mapping
    (``{"name": "adam", "lr": 0.01}``) or an already built :class:`Filler`.

    Raises:
        ConfigError: an unknown slot or filler name (with the choices and a suggestion), an
            argument the filler does not take, or a filler of another slot.
    """
    if slot not in FILLERS:
        raise ConfigError(f"Unknown slot {slot!r}{did_you_mean(slot, FILLERS)}. Slots: {list(FILLERS)}.")
    if isinstance(spec, Filler):
        if spec.slot != slot:
            raise ConfigError(f"A {type(spec).__name__} fills the {spec.slot!r} slot, not {slot!r}.")
        return spec
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, dict) or "name" not in spec:
        raise ConfigError(f"The {slot} filler must be a name or a mapping with a `name` "
                          f"(e.g. {{name: {next(iter(FILLERS[slot]), 'sgd')}}}). Got {spec!r}.")
    spec = dict(spec)
    name = str(spec.pop("name")).lower()
    if name not in FILLERS[slot]:
        raise ConfigError(f"Unknown {slot} filler {name!r}{did_you_mean(name, FILLERS[slot])}. "
                          f"Choose one of {sorted(FILLERS[slot])}, or register your own with "
                          f"autometa.slots.register_filler.")
    cls = FILLERS[slot][name]
    bind_arguments(f"{slot} filler {name!r}", cls, spec, stop=Filler)
    return cls(**spec)
