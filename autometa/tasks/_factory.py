"""Build task distributions from a config section."""

from __future__ import annotations

from autometa.data import load_dataset
from autometa.errors import ConfigError
from autometa.tasks._attributes import seven_segment_mnist
from autometa.tasks._base import TaskDistribution
from autometa.tasks._classification import FewShotClassification, omniglot_splits, split_classes
from autometa.tasks._regression import RandomQuadratics, Sinusoid
from autometa.tasks._supervised import supervised_tasks

SPLITS = ("train", "val", "test")
_CACHE: dict = {}


def _dataset(name: str, root, size):
    key = (name, root, size)
    if key not in _CACHE:
        kwargs = {"root": root} if root is not None else {}
        if name == "omniglot":
            kwargs["size"] = size or 28
        _CACHE[key] = load_dataset(name, **kwargs)
    return _CACHE[key]


def make_tasks(spec: dict, split: str) -> TaskDistribution:
    """The task distribution a config's ``tasks`` section describes, for one split.

    ``spec`` keys: ``name`` (``sinusoid``, ``quadratic``, ``omniglot``, ``mnist``,
    ``fashion_mnist``, ``digits``), ``ways``, ``shots``, ``queries``; optional ``train_ways``,
    ``train_shots``, ``train_queries`` (e.g. ProtoNet's 60-way training), ``scheme``
    (Omniglot: ``vinyals`` or ``lake``), ``rotations``, ``root``, ``image_size``,
    ``val_classes``, ``split_seed``; for image datasets other than Omniglot, ``classes``:
    ``{train: n, val: n, test: n}`` class counts of a seeded class split. ``supervised``
    (plain supervised problems, :class:`~autometa.tasks.SupervisedClassification`) takes
    ``dataset``, ``ways``, ``train_size``, ``test_size`` and ``examples``: ``{train: 0.6, ...}``
    fractions of a seeded split of the examples.
    """
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {SPLITS}. Got {split!r}.")
    spec = dict(spec)
    name = spec.pop("name", None)
    prefix = "train_" if split == "train" else ""

    def get(key, default=None):
        return spec.get(prefix + key, spec.get(key, default))

    if name == "sinusoid":
        return Sinusoid(shots=get("shots", 10), queries=get("queries", 10))
    if name == "quadratic":
        return RandomQuadratics(dim=spec.get("dim", 10))
    if name == "seven_segment_mnist":  # zero-shot: classes given by meta-data vectors
        return seven_segment_mnist(split, get("ways"), get("queries", 15), spec.get("root"))
    if name == "supervised":
        data = _dataset(spec.get("dataset", "digits"), spec.get("root"), spec.get("image_size"))
        return supervised_tasks(data, split, spec.get("ways"), spec.get("train_size", 50), spec.get("test_size", 100),
                                spec.get("examples"), spec.get("split_seed", 1))
    if name in ("omniglot", "mnist", "fashion_mnist", "digits"):
        data = _dataset(name, spec.get("root"), spec.get("image_size"))
        seed = spec.get("split_seed", 1)
        if name == "omniglot":
            parts = omniglot_splits(data, spec.get("scheme", "vinyals"), spec.get("val_classes", 100), seed)
            rotations = spec.get("rotations", (0, 1, 2, 3))
        else:
            sizes = spec.get("classes") or {"train": 5, "val": 0, "test": 5}
            parts = split_classes(data.classes, sizes, seed)
            rotations = spec.get("rotations", (0,))
            if len(parts.get(split, ())) == 0:
                raise ConfigError(
                    f"The {split!r} split of {name} has no classes (tasks.classes={sizes}); give it "
                    f"some, or set run.validate_every=0 to train without validation."
                )
        return FewShotClassification(data, parts[split], get("ways", 5), get("shots", 1),
                                     get("queries", 15), rotations, name=f"{name}/{split}")
    raise ConfigError(
        f"Unknown task family {name!r}. Choose one of sinusoid, quadratic, omniglot, mnist, "
        f"fashion_mnist, digits, seven_segment_mnist, supervised."
    )
