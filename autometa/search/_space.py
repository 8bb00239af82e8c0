"""The backend-neutral search space: parameters as data, validated as a whole.

A space is a mapping from dotted parameter names to distributions::

    inner_lr:     {float: [1.0e-3, 1.0], log: true}
    inner_steps:  {int: [1, 10]}
    optimizer:    {choice: [SGD, Adam, LSTMOptimizer]}
    optimizer.lr: {float: [1.0e-4, 1.0e-1], log: true, when: {optimizer: [SGD, Adam]}}

Nested mappings are namespaces, so ``learner: {inner_lr: {float: [...]}}`` names
``learner.inner_lr``. ``when`` makes a parameter conditional: it is sampled only when every
named parameter currently has one of the listed values (the choice of *which filler* goes into a
slot, with each filler's own hyperparameters). Options: ``log`` (floats, ints), ``step``
(floats, ints; a float with a step is quantized), ``when``.
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from autometa.errors import ConfigError

KINDS = ("float", "int", "choice")
OPTIONS = {"float": {"log", "step", "when"}, "int": {"log", "step", "when"}, "choice": {"when"}}


@dataclass(frozen=True)
class Param:
    """One searchable hyperparameter.

    Attributes:
        name: dotted name, e.g. ``learner.inner_lr`` or ``optimizer.lr``.
        kind: ``"float"``, ``"int"`` or ``"choice"``.
        low, high: inclusive bounds (float and int).
        log: sample on a log scale.
        step: quantization step (``None``: continuous floats, 1 for ints).
        choices: the categories (choice).
        when: ``{other_param: [allowed values]}``; the parameter is active only if all hold.
    """

    name: str
    kind: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple = ()
    when: dict = field(default_factory=dict)

    def contains(self, value) -> bool:
        """Whether ``value`` is a possible value of this parameter."""
        if self.kind == "choice":
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.kind == "int" and int(value) != value:
            return False
        return self.low - 1e-12 * abs(self.low) <= value <= self.high + 1e-12 * abs(self.high)

    def grid(self) -> list:
        """Every value of a discrete parameter (for grid search)."""
        if self.kind == "choice":
            return list(self.choices)
        if self.step is None:
            raise ConfigError(
                f"Grid search needs discrete parameters, but float parameter {self.name!r} has no "
                f"`step`. Add e.g. `step: {(self.high - self.low) / 4:g}` or make it a `choice`."
            )
        count = math.floor((self.high - self.low) / self.step + 1e-9) + 1
        values = [self.low + i * self.step for i in range(count)]
        return [int(v) for v in values] if self.kind == "int" else [round(v, 12) for v in values]

    def to_dict(self) -> dict:
        """The parameter in the file format (round-trips through :func:`parse_space`)."""
        if self.kind == "choice":
            out: dict = {"choice": list(self.choices)}
        else:
            out = {self.kind: [self.low, self.high]}
            if self.log:
                out["log"] = True
            if self.step is not None and not (self.kind == "int" and self.step == 1):
                out["step"] = self.step
        if self.when:
            out["when"] = {k: list(v) for k, v in self.when.items()}
        return out


class SearchSpace:
    """An ordered, validated collection of :class:`Param`, conditions resolved in order.

    Build one with :func:`parse_space` (a dict), :func:`load_space` (a YAML file) or
    :meth:`SearchSpace.coerce` (either, or a space). Parameters are stored in an order in
    which every parameter comes after the parameters its ``when`` refers to.
    """

    def __init__(self, params: list[Param], resources: dict | None = None):
        self.params: dict[str, Param] = {p.name: p for p in params}
        #: per-trial resources given in the space file (``resources: {cpu: 1, gpu: 0.25}``), for Ray
        self.resources = resources

    def __iter__(self):
        return iter(self.params.values())

    def __len__(self) -> int:
        return len(self.params)

    def __contains__(self, name: str) -> bool:
        return name in self.params

    def __getitem__(self, name: str) -> Param:
        return self.params[name]

    def __repr__(self) -> str:
        return f"SearchSpace({self.to_dict()})"

    @property
    def names(self) -> list[str]:
        return list(self.params)

    @property
    def conditional(self) -> bool:
        """Whether any parameter has a ``when`` condition."""
        return any(p.when for p in self)

    @classmethod
    def coerce(cls, space) -> SearchSpace:
        """A :class:`SearchSpace` from a space, a dict, or the path of a YAML file."""
        if isinstance(space, SearchSpace):
            return space
        if isinstance(space, (str, os.PathLike)):
            return load_space(space)
        if isinstance(space, dict):
            return parse_space(space)
        raise ConfigError(f"A search space must be a dict, a YAML path or a SearchSpace. Got {type(space).__name__}.")

    def is_active(self, name: str, values: dict) -> bool:
        """Whether parameter ``name`` is sampled given the values chosen so far."""
        return all(values.get(ref, _MISSING) in allowed for ref, allowed in self.params[name].when.items())

    def active_params(self, values: dict) -> list[Param]:
        """The parameters active for an (possibly over-complete) assignment ``values``."""
        chosen: dict = {}
        out = []
        for param in self:
            if self.is_active(param.name, chosen) and param.name in values:
                chosen[param.name] = values[param.name]
                out.append(param)
        return out

    def prune(self, values: dict) -> dict:
        """``values`` restricted to the parameters that are active (drops inactive conditionals)."""
        return {p.name: values[p.name] for p in self.active_params(values)}

    def check_values(self, values: dict) -> None:
        """Raise a :class:`ConfigError` unless ``values`` assigns every active parameter a possible value."""
        problems, chosen = [], {}
        for param in self:
            if not self.is_active(param.name, chosen):
                continue
            if param.name not in values:
                problems.append(f"{param.name!r} is missing")
                continue
            if not param.contains(values[param.name]):
                problems.append(f"{param.name!r}={values[param.name]!r} is outside {param.to_dict()}")
            chosen[param.name] = values[param.name]
        if problems:
            raise ConfigError("Parameters do not fit the search space: " + "; ".join(problems) + ".")

    def to_dict(self) -> dict:
        return {p.name: p.to_dict() for p in self}

    def check_config(self, config: dict) -> None:
        """Raise one :class:`ConfigError` naming every parameter the experiment config does not have.

        A name ``a.b.c`` is accepted when ``a.b`` is a section of ``config`` and either ``c`` is
        set there, or the section names a component (``name: maml``) whose constructor takes
        ``c``. A parameter naming a section that has a ``name`` chooses that component.
        """
        problems = []
        for param in self:
            choices = {n: p.choices for n, p in self.params.items() if p.kind == "choice"}
            problem = _config_problem(config, param, choices)
            if problem:
                problems.append(problem)
        if problems:
            raise ConfigError("The search space does not fit the experiment config:\n  - " + "\n  - ".join(problems))


_MISSING = object()


def _config_problem(config: dict, param: Param, choices: dict) -> str | None:
    parts = param.name.split(".")
    node: Any = config
    for depth, part in enumerate(parts[:-1]):
        if not isinstance(node, dict) or part not in node:
            here = ".".join(parts[:depth]) or "the top level"
            keys = sorted(node) if isinstance(node, dict) else []
            return (f"{param.name!r}: the config has no section {part!r} in {here} (it has {keys}); "
                    f"use a name the experiment config has")
        node = node[part]
    leaf = parts[-1]
    if not isinstance(node, dict):
        return f"{param.name!r}: {'.'.join(parts[:-1])!r} is a value, not a section of the config"
    if leaf in node:
        if param.name == "learner" and isinstance(node[leaf], dict) and param.kind == "choice":
            from autometa.learners import LEARNERS

            unknown = [c for c in param.choices if str(c).lower() not in LEARNERS]
            if unknown:
                return f"'learner': unknown learner(s) {unknown}; choose from {sorted(LEARNERS)}"
        return None
    section = ".".join(parts[:-1])
    if section != "learner":
        return (f"{param.name!r}: the config section {section or 'top level'!r} has no key {leaf!r} "
                f"(it has {sorted(node)}); use one of those names, or set {param.name} in the config first")
    accepted = _component_arguments(node, choices.get(section, ()))
    if accepted is None or leaf in accepted:
        return None
    return (f"{param.name!r}: the learner section has no key {leaf!r}, and the learner(s) it may name take "
            f"only {sorted(accepted)}; use one of those names")


def _component_arguments(node: dict, chosen: tuple) -> set | None:
    """Constructor arguments of the learner(s) a ``learner`` section may name; None: unknown learner."""
    import inspect

    from autometa.learners import LEARNERS, Learner

    names = {str(node.get("name", "")).lower()} | {str(c).lower() for c in chosen}
    accepted: set = set()
    for name in names:
        cls = LEARNERS.get(name)
        if cls is None:
            return None
        for klass in cls.__mro__:
            if klass is Learner:
                break
            accepted |= set(inspect.signature(klass.__init__).parameters) - {"self", "model", "kwargs"}
    return accepted


def _is_distribution(spec) -> bool:
    return isinstance(spec, dict) and any(k in spec for k in KINDS)


def _flatten(raw: dict, prefix: str, out: dict, problems: list) -> None:
    for key, spec in raw.items():
        name = f"{prefix}{key}"
        if not isinstance(key, str) or not key:
            problems.append(f"parameter names must be non-empty strings. Got {key!r}")
        elif _is_distribution(spec):
            out[name] = spec
        elif isinstance(spec, dict) and spec and all(isinstance(v, dict) for v in spec.values()):
            _flatten(spec, name + ".", out, problems)
        else:
            problems.append(
                f"{name!r}: unknown distribution {spec!r}; use one of "
                f"{{float: [low, high]}}, {{int: [low, high]}}, {{choice: [a, b, ...]}} (or a mapping of those)"
            )


def _parse_param(name: str, spec: dict, problems: list) -> Param | None:
    kinds = [k for k in KINDS if k in spec]
    if len(kinds) > 1:
        problems.append(f"{name!r}: give one distribution, not {kinds}")
        return None
    kind = kinds[0]
    unknown = sorted(set(spec) - {kind} - OPTIONS[kind])
    if unknown:
        problems.append(f"{name!r}: unknown option(s) {unknown} for a {kind} (allowed: {sorted(OPTIONS[kind])})")
    when = spec.get("when", {}) or {}
    if not isinstance(when, dict) or not all(isinstance(v, (list, tuple)) for v in when.values()):
        problems.append(f"{name!r}: `when` must map parameter names to lists of values, e.g. "
                        f"{{optimizer: [SGD, Adam]}}. Got {when!r}")
        when = {}
    when = {str(k): tuple(v) for k, v in when.items()}
    value = spec[kind]
    if kind == "choice":
        if not isinstance(value, (list, tuple)) or len(value) == 0:
            problems.append(f"{name!r}: `choice` needs a non-empty list. Got {value!r}")
            return None
        if len(set(map(repr, value))) != len(value):
            problems.append(f"{name!r}: `choice` lists a value twice: {value!r}")
        if not all(v is None or isinstance(v, (str, int, float, bool)) for v in value):
            problems.append(f"{name!r}: choices must be strings, numbers, booleans or null. Got {value!r}")
        return Param(name, "choice", choices=tuple(value), when=when)
    number = (int,) if kind == "int" else (int, float)
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or not all(isinstance(v, number) and not isinstance(v, bool) for v in value)):
        problems.append(f"{name!r}: `{kind}` needs [low, high] as two {'integers' if kind == 'int' else 'numbers'}. "
                        f"Got {value!r}")
        return None
    low, high = value
    log = spec.get("log", False)
    step = spec.get("step")
    if not isinstance(log, bool):
        problems.append(f"{name!r}: `log` must be true or false. Got {log!r}")
        log = False
    if low > high:
        problems.append(f"{name!r}: low > high ({low} > {high}); swap them")
    if log and low <= 0:
        problems.append(f"{name!r}: a log-scale range needs low > 0. Got low={low}")
    if step is not None:
        if isinstance(step, bool) or not isinstance(step, number) or step <= 0:
            problems.append(f"{name!r}: `step` must be a {'positive integer' if kind == 'int' else 'number > 0'}. "
                            f"Got {step!r}")
            step = None
        elif log and (kind == "float" or step != 1):
            problems.append(f"{name!r}: `step` and `log` cannot be combined (Optuna, Ray and NNI all refuse it)")
    if kind == "int":
        step = 1 if step is None else step
        return Param(name, "int", int(low), int(high), log, int(step), when=when)
    return Param(name, "float", float(low), float(high), log, None if step is None else float(step), when=when)


def parse_space(raw: dict) -> SearchSpace:
    """Validate a space given as a dict and return it as a :class:`SearchSpace`.

    Raises:
        ConfigError: one error listing every problem (unknown distributions or options,
            low > high, log ranges that include 0, bad or circular ``when`` references).

    Example::

        space = parse_space({"inner_lr": {"float": [1e-3, 1.0], "log": True},
                             "inner_steps": {"int": [1, 10]}})
    """
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"A search space must be a non-empty mapping of parameter names to distributions. "
                          f"Got {raw!r}.")
    problems: list[str] = []
    raw = dict(raw)
    resources = raw.pop(RESOURCES_KEY, None)
    if resources is not None:
        problems += resources_problems(resources, f"`{RESOURCES_KEY}` of the space")
    if not raw:
        problems.append("the space has no parameters besides `resources`")
    flat: dict = {}
    _flatten(raw, "", flat, problems)
    params = {}
    for name, spec in flat.items():
        param = _parse_param(name, spec, problems)
        if param is not None:
            params[name] = param
    for param in params.values():
        for ref, allowed in param.when.items():
            target = params.get(ref)
            if ref not in flat:
                problems.append(f"{param.name!r}: `when` refers to {ref!r}, which is not a parameter of the space "
                                f"(parameters: {sorted(flat)})")
            elif ref == param.name:
                problems.append(f"{param.name!r}: `when` refers to the parameter itself")
            elif target is not None:
                bad = [v for v in allowed if not target.contains(v)]
                if bad:
                    problems.append(f"{param.name!r}: `when` lists {bad} for {ref!r}, which can never take "
                                    f"{'that value' if len(bad) == 1 else 'those values'} ({target.to_dict()})")
    ordered = _order(params, problems)
    if problems:
        raise ConfigError("Invalid search space:\n  - " + "\n  - ".join(problems))
    return SearchSpace(ordered, resources)


#: the reserved top-level key of a space file that gives Ray's per-trial resources
RESOURCES_KEY = "resources"


def resources_problems(resources, owner: str = "resources") -> list[str]:
    """Why ``resources`` is not a mapping of resource names to amounts >= 0 (``{cpu: 1, gpu: 0.25}``)."""
    if not isinstance(resources, dict) or not resources:
        return [f"{owner} must be a mapping such as {{cpu: 1, gpu: 0.25}}. Got {resources!r}"]
    bad = {k: v for k, v in resources.items() if not isinstance(k, str) or isinstance(v, bool)
           or not isinstance(v, (int, float)) or not v >= 0}
    if bad:
        return [f"{owner}: every amount must be a number >= 0 (a GPU fraction such as 0.25 shares one device). "
                f"Got {bad}"]
    gpu = resources.get("gpu", 0)
    if gpu > 1 and gpu != int(gpu):
        return [f"{owner}: a trial takes a fraction of one GPU or whole GPUs; gpu={gpu} is neither"]
    return []


def _order(params: dict[str, Param], problems: list) -> list[Param]:
    """Parameters sorted so that each comes after the ones its condition reads (file order kept)."""
    done: dict[str, Param] = {}
    visiting: set = set()

    def visit(name: str, chain: tuple) -> None:
        if name in done or name not in params:
            return
        if name in visiting:
            problems.append(f"circular `when` conditions: {' -> '.join(chain + (name,))}")
            return
        visiting.add(name)
        for ref in params[name].when:
            visit(ref, chain + (name,))
        visiting.discard(name)
        done[name] = params[name]

    for name in params:
        visit(name, ())
    return list(done.values())


#: the search spaces shipped with the package (``autometa/search_spaces/*.yaml``)
SHIPPED = Path(__file__).resolve().parents[1] / "search_spaces"


def shipped_spaces() -> list[str]:
    """Names of the search spaces shipped with autometa (usable as ``load_space(name)``)."""
    return sorted(p.stem for p in SHIPPED.glob("*.yaml"))


def load_space(path: str | os.PathLike) -> SearchSpace:
    """Read and validate a YAML search space file (see the module docstring for the format).

    ``path`` is a file, or the name of a space shipped with autometa (``"maml_sinusoid"``, also
    ``"search_spaces/maml_sinusoid.yaml"``) when no such file exists.
    """
    from autometa.experiment._config import load_yaml

    path = Path(path)
    if not path.is_file():
        shipped = SHIPPED / (path.name if path.suffix == ".yaml" else f"{path.name}.yaml")
        if not shipped.is_file():
            raise ConfigError(f"Search space file {str(path)!r} does not exist and is not a shipped space. Pass a "
                              f"YAML file, or one of {shipped_spaces()}.")
        path = shipped
    try:
        raw = load_yaml(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"Search space file {str(path)!r} is not valid YAML: {exc}") from exc
    try:
        return parse_space(raw)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def apply_params(config: dict, values: dict) -> dict:
    """A copy of ``config`` with each dotted parameter set as a nested override.

    A value for a section that names its component (``learner: {name: maml, ...}``) replaces
    the component's name, so ``{"learner": "metasgd", "learner.inner_lr": 0.1}`` gives
    ``learner: {name: metasgd, inner_lr: 0.1, ...}``.
    """
    out = copy.deepcopy(config)
    for name in sorted(values, key=lambda n: n.count(".")):
        parts = name.split(".")
        node = out
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"Cannot set {name!r}: {part!r} is a value, not a section of the config.")
            node = child
        if isinstance(node.get(parts[-1]), dict) and "name" in node[parts[-1]] and not isinstance(values[name], dict):
            node[parts[-1]]["name"] = values[name]
        else:
            node[parts[-1]] = values[name]
    return out
