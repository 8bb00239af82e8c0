"""Build task distributions from a config section.

A ``tasks`` section names a family and gives the arguments of its constructor; every key is
checked against that constructor's signature (plus the few keys the factory handles itself)
before any data is loaded, so a typo such as ``shot`` fails with a suggestion instead of being
ignored.
"""

from __future__ import annotations

from autometa._params import bind_arguments, did_you_mean
from autometa.data import load_dataset
from autometa.errors import ConfigError
from autometa.tasks._attributes import seven_segment_mnist
from autometa.tasks._base import TaskDistribution
from autometa.tasks._classification import FewShotClassification, omniglot_splits, split_classes
from autometa.tasks._l2o import MLPFamily, QuadraticFamily
from autometa.tasks._regression import RandomQuadratics, Sinusoid
from autometa.tasks._sequence import SequenceClassification
from autometa.tasks._supervised import supervised_tasks

SPLITS = ("train", "val", "test")
IMAGE_FAMILIES = ("omniglot", "mnist", "fashion_mnist", "digits")
FAMILIES = ("sinusoid", "quadratic", "seven_segment_mnist", *IMAGE_FAMILIES, "supervised", "l2o_quadratic", "l2o_mlp",
            "omniglot_sequence")
# keys that may be given per split as train_<key> (e.g. ProtoNet's 60-way training)
_PER_SPLIT = ("ways", "shots", "queries")
# default rotations (quarter turns) per split; Lake et al. evaluate on unrotated characters
_ROTATIONS = {
    "vinyals": {"train": (0, 1, 2, 3), "val": (0, 1, 2, 3), "test": (0, 1, 2, 3)},
    "lake": {"train": (0, 1, 2, 3), "val": (0,), "test": (0,)},
}
_CACHE: dict = {}


def _dataset(name: str, root, size):
    key = (name, root, size)
    if key not in _CACHE:
        kwargs = {"root": root} if root is not None else {}
        if name == "omniglot":
            kwargs["size"] = size or 28
        _CACHE[key] = load_dataset(name, **kwargs)
    return _CACHE[key]


def _accepted(name: str) -> tuple:
    """``(constructor, skip, extra)`` for :func:`bind_arguments` of family ``name``."""
    train_keys = tuple(f"train_{k}" for k in _PER_SPLIT)
    if name == "sinusoid":
        return Sinusoid, (), ("train_shots", "train_queries")
    if name == "quadratic":
        return RandomQuadratics, (), ()
    if name == "seven_segment_mnist":
        return seven_segment_mnist, ("split",), ("train_ways", "train_queries")
    if name == "l2o_quadratic":
        return QuadraticFamily, (), ()
    if name == "l2o_mlp":
        return MLPFamily, ("dataset", "name"), ("dataset", "root", "held_out")
    if name == "supervised":
        return supervised_tasks, ("data", "split"), ("dataset", "root", "image_size")
    if name == "omniglot_sequence":
        return SequenceClassification, ("dataset", "classes", "name"), ("root", "split_seed", "scheme", "val_classes")
    extra = ("root", "split_seed", "ways", "shots", "queries", *train_keys)
    extra += ("scheme", "val_classes", "image_size") if name == "omniglot" else ("classes",)
    return FewShotClassification, ("dataset", "classes", "name", *_PER_SPLIT), extra


def check_tasks_spec(spec: dict) -> dict:
    """Check a ``tasks`` section's keys against its family's constructor; return it unchanged.

    Raises:
        ConfigError: an unknown family, or every unknown key with a did-you-mean suggestion.
    """
    if not isinstance(spec, dict):
        raise ConfigError(f"The tasks section must be a mapping such as {{name: sinusoid, shots: 10}}. Got {spec!r}.")
    name = spec.get("name")
    if name not in FAMILIES:
        raise ConfigError(f"Unknown task family {name!r}{did_you_mean(name, FAMILIES)}. "
                          f"Choose one of {', '.join(FAMILIES)}.")
    fn, skip, extra = _accepted(name)
    bind_arguments(f"tasks {name!r}", fn, {k: v for k, v in spec.items() if k != "name"}, skip=skip, extra=extra)
    return spec


def split_rotations(value, split: str, default: tuple[int, ...]) -> tuple[int, ...]:
    """The rotations (quarter turns) of ``split`` from a ``rotations`` entry.

    ``value`` is None (``default``), a list for every split, or a mapping ``{train: [...],
    test: [...]}`` (splits left out keep their default). Rotations are quarter turns
    (``0, 1, 2, 3``) or degrees (``0, 90, 180, 270``).

    Raises:
        ConfigError: an unknown split name or a rotation that is not a multiple of 90 degrees.
    """
    if isinstance(value, dict):
        unknown = [k for k in value if k not in SPLITS]
        if unknown:
            raise ConfigError(f"tasks.rotations has the unknown split(s) {unknown}; use keys among {SPLITS}, "
                              f"e.g. rotations: {{train: [0, 90, 180, 270], test: [0]}}.")
        value = value.get(split)
    if value is None:
        return tuple(default)
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) and v == int(v) for v in items)
    turns = [int(v) for v in items] if numbers else []
    degrees = any(v >= 4 for v in turns)
    if not turns or not all((v % 90 == 0 and 0 <= v < 360) if degrees else 0 <= v < 4 for v in turns):
        raise ConfigError(f"tasks.rotations for split {split!r} must be a non-empty list of quarter turns "
                          f"(0, 1, 2, 3) or of degrees (0, 90, 180, 270). Got {value!r}.")
    return tuple(sorted({v // 90 if degrees else v for v in turns}))


def make_tasks(spec: dict, split: str) -> TaskDistribution:
    """The task distribution a config's ``tasks`` section describes, for one split.

    ``spec`` keys: ``name`` (``sinusoid``, ``quadratic``, ``omniglot``, ``mnist``,
    ``fashion_mnist``, ``digits``, ``seven_segment_mnist``) and the arguments of that family's
    constructor: ``ways``, ``shots``, ``queries`` (``Sinusoid`` also takes ``amplitude``,
    ``phase``, ``x_range``; ``RandomQuadratics`` ``dim``); optional ``train_ways``,
    ``train_shots``, ``train_queries`` for the training split (e.g. ProtoNet's 60-way
    training), ``rotations`` (quarter turns or degrees; a list for every split or a mapping
    per split, ``{train: [0, 90, 180, 270], test: [0]}``), ``root``, ``split_seed``; for
    Omniglot ``scheme`` (``vinyals``: rotations in every split by default; ``lake``: Lake et
    al.'s background/evaluation alphabets, rotations only in training by default),
    ``val_classes``, ``image_size``; for the other image datasets ``classes``:
    ``{train: n, val: n, test: n}`` class counts of a seeded class split. ``supervised``
    (plain supervised problems, :class:`~autometa.tasks.SupervisedClassification`) takes
    ``dataset`` (one of the image datasets), ``ways``, ``train_size``, ``test_size``,
    ``examples`` (``{train: 0.6, val: 0.2, test: 0.2}`` fractions of a seeded split of the
    examples) and ``split_seed``. ``omniglot_sequence`` (MANN's online episodes,
    :class:`~autometa.tasks.SequenceClassification`) takes ``ways`` (5), ``length`` (50),
    ``image_size`` (20), ``rotations``, ``scheme`` (``lake`` by default: test episodes come from
    the evaluation alphabets), ``val_classes``, ``split_seed``, ``root``.

    Raises:
        ConfigError: an unknown family or key (with a suggestion), or a bad ``rotations``.
        TaskSpecError: a request the data cannot satisfy (too many ways, shots, ...).
    """
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {SPLITS}. Got {split!r}.")
    check_tasks_spec(spec)
    spec = dict(spec)
    name = spec.pop("name")
    prefix = "train_" if split == "train" else ""

    def get(key, default=None):
        return spec.get(prefix + key, spec.get(key, default))

    if name == "sinusoid":
        extra = {k: v for k, v in spec.items() if k in ("amplitude", "phase", "x_range")}
        return Sinusoid(shots=get("shots", 10), queries=get("queries", 10), **extra)
    if name == "quadratic":
        return RandomQuadratics(dim=spec.get("dim", 10))
    if name == "l2o_quadratic":  # optimizees of learned optimizers (autometa.learners.L2O)
        return QuadraticFamily(dim=spec.get("dim", 10), init_scale=spec.get("init_scale", 1.0))
    if name == "l2o_mlp":  # held_out: test problems draw their minibatches from the dataset's test images
        test_images = split == "test" and spec.get("held_out", True)
        key = ("l2o", spec.get("dataset", "mnist"), spec.get("root"), test_images)
        if key not in _CACHE:
            _CACHE[key] = load_dataset(key[1], train=not test_images, **({"root": key[2]} if key[2] else {}))
        data = _CACHE[key]
        return MLPFamily(data, steps=spec.get("steps", 100), batch_size=spec.get("batch_size", 128),
                         queries=spec.get("queries", 256), name=f"{spec.get('dataset', 'mnist')}/{split}")
    if name == "supervised":
        dataset = spec.pop("dataset", "digits")
        if dataset not in IMAGE_FAMILIES and not str(dataset).endswith(".npz"):  # or a saved (e.g. distilled) set
            raise ConfigError(f"tasks.dataset of the supervised family must be an .npz path or one of "
                              f"{', '.join(IMAGE_FAMILIES)}"
                              f"{did_you_mean(str(dataset), IMAGE_FAMILIES)}. Got {dataset!r}.")
        data = _dataset(dataset, spec.pop("root", None), spec.pop("image_size", None))
        return supervised_tasks(data, split, **spec)
    if name == "seven_segment_mnist":  # zero-shot: classes given by meta-data vectors
        extra = {"test_digits": spec["test_digits"]} if "test_digits" in spec else {}
        return seven_segment_mnist(split, get("ways"), get("queries", 15), spec.get("root"), **extra)
    if name == "omniglot_sequence":  # MANN's online episodes (Santoro et al. 2016): 5 classes, 50 steps, 20x20
        data = _dataset("omniglot", spec.get("root"), None)
        scheme = spec.get("scheme", "lake")
        parts = omniglot_splits(data, scheme, spec.get("val_classes", 100), spec.get("split_seed", 1))
        rotations = split_rotations(spec.get("rotations"), split, _ROTATIONS[scheme][split])
        return SequenceClassification(data, parts[split], spec.get("ways", 5), spec.get("length", 50), rotations,
                                      spec.get("image_size", 20), name=f"omniglot_sequence/{split}")
    data = _dataset(name, spec.get("root"), spec.get("image_size"))
    seed = spec.get("split_seed", 1)
    if name == "omniglot":
        scheme = spec.get("scheme", "vinyals")
        parts = omniglot_splits(data, scheme, spec.get("val_classes", 100), seed)
        rotations = split_rotations(spec.get("rotations"), split, _ROTATIONS[scheme][split])
    else:
        sizes = spec.get("classes") or {"train": 5, "val": 0, "test": 5}
        parts = split_classes(data.classes, sizes, seed)
        rotations = split_rotations(spec.get("rotations"), split, (0,))
        if len(parts.get(split, ())) == 0:
            raise ConfigError(
                f"The {split!r} split of {name} has no classes (tasks.classes={sizes}); give it "
                f"some, or set run.validate_every=0 to train without validation."
            )
    return FewShotClassification(data, parts[split], get("ways", 5), get("shots", 1),
                                 get("queries", 15), rotations, name=f"{name}/{split}")
