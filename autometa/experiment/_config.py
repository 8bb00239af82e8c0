"""Experiment configs: YAML files with defaults, ``--set key=value`` overrides, one validation.

A config has the sections ``tasks``, ``model``, ``learner``, ``outer`` and ``run`` plus a
``seed``; see ``experiments/`` for examples. Every problem found is reported in one error.
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path

import yaml

from autometa._params import did_you_mean
from autometa.errors import ConfigError


class YamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader reading numbers as YAML 1.2 does: ``1e-3`` is a float.

    PyYAML follows YAML 1.1, whose float pattern needs a dot, so ``1e-3`` and ``1E5`` were read
    as strings and a learning rate written the usual way was refused. Every YAML that autometa
    reads (experiment, comparison and search-space files, ``--set`` values, a run's saved
    ``config.yaml``) goes through :func:`load_yaml`.
    """


YamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:float"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                   |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
                   |[-+]?\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
                   |[-+]?\.(?:inf|Inf|INF)
                   |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


def load_yaml(text: str):
    """``yaml.safe_load(text)`` with YAML 1.2 numbers (``1e-3`` is the float 0.001)."""
    return yaml.load(text, Loader=YamlLoader)  # a SafeLoader subclass: safe

DEFAULTS: dict = {
    "seed": 0,
    "tasks": {},
    "model": {},
    "learner": {},
    "outer": {
        "optimizer": "adam",      # adam | sgd
        "lr": 1e-3,
        "meta_batch": 32,
        "steps": 1000,
        "lr_decay": 1.0,          # multiply lr by this every lr_decay_every steps
        "lr_decay_every": 0,      # 0: constant
        "clip_grad": 0.0,         # max gradient norm; 0: no clipping
        "weight_decay": 0.0,
    },
    "run": {
        "validate_every": 500,    # 0: no validation (the last step's weights are tested)
        "val_tasks": 200,
        "test_tasks": 600,
        "eval_batch": 50,
        "checkpoint_every": 500,
        "log_every": 10,
        "threads": None,          # torch intra-op threads; None leaves torch's default
        "device": "cpu",
        "precision": "fp32",      # fp32 (exact: TF32 off) | tf32 | bf16 (autocast) | torch (torch's own settings)
        "memory_budget": None,    # what vmap may hold: a fraction of free device memory or bytes; None: 0.25
        "device_tasks": False,    # keep the images on run.device and sample episodes there
        "distributed": False,     # data-parallel over each meta-batch's tasks (launch with torchrun)
        "progress": True,
        "time_budget_s": 0,       # stop meta-training after this much meta-training time; 0: none
        "cpu_budget_s": 0,        # the same in CPU time of this process (robust to a busy machine)
        "count_flops": False,     # count the FLOPs of one meta-step and one test task
        "val_seed": 1234,
        "test_seed": 4321,
    },
}

# keys that may change between a run and its resumption
RESUMABLE_CHANGES = {"outer.steps", "run.progress", "run.threads", "run.memory_budget", "run.checkpoint_every",
                     "run.time_budget_s", "run.cpu_budget_s"}

_NUMBERS = {
    # key: (type, minimum, strict)
    "outer.lr": (float, 0.0, True), "outer.meta_batch": (int, 1, False), "outer.steps": (int, 0, False),
    "outer.lr_decay": (float, 0.0, True), "outer.lr_decay_every": (int, 0, False),
    "outer.clip_grad": (float, 0.0, False), "outer.weight_decay": (float, 0.0, False),
    "run.validate_every": (int, 0, False), "run.val_tasks": (int, 1, False),
    "run.test_tasks": (int, 1, False), "run.eval_batch": (int, 1, False),
    "run.checkpoint_every": (int, 0, False), "run.log_every": (int, 1, False),
    "run.time_budget_s": (float, 0.0, False), "run.cpu_budget_s": (float, 0.0, False),
}


def deep_merge(base: dict, override: dict) -> dict:
    """``override`` merged into a copy of ``base``, section by section."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def get_path(config: dict, dotted: str):
    node = config
    for part in dotted.split("."):
        node = node[part]
    return node


def set_path(config: dict, dotted: str, value) -> None:
    """Set ``config["a"]["b"] = value`` for ``dotted="a.b"``, creating sections as needed."""
    parts = dotted.split(".")
    node = config
    for part in parts[:-1]:
        if not isinstance(node.get(part, {}), dict):
            raise ConfigError(f"Cannot set {dotted!r}: {part!r} is a value, not a section.")
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def parse_overrides(items: list[str]) -> dict:
    """``["learner.inner_lr=0.1", "run.progress=false"]`` -> nested dict; values parsed as YAML."""
    out: dict = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"An override must look like key=value (e.g. learner.inner_lr=0.1). Got {item!r}.")
        try:
            value = load_yaml(raw) if raw else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"The value of override {item!r} is not valid YAML: {exc}") from exc
        set_path(out, key.strip(), value)
    return out


def read_mapping(source: str | os.PathLike | dict, what: str, example: str) -> dict:
    """A copy of ``source`` if it is a dict, else the mapping in the YAML file it names.

    Raises:
        ConfigError: a missing file, invalid YAML, or a file that does not hold a mapping;
            ``what`` names the kind of file and ``example`` one to pass instead.
    """
    if isinstance(source, dict):
        return copy.deepcopy(source)
    path = Path(source)
    if path.is_dir():
        raise ConfigError(f"{what} {str(path)!r} is a directory, pass a YAML file, e.g. {example}.")
    if not path.is_file():
        raise ConfigError(f"{what} {str(path)!r} does not exist. Pass the path of a YAML file, e.g. {example}.")
    try:
        raw = load_yaml(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {str(path)!r} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{what} {str(path)!r} must hold a mapping of sections. Got {type(raw).__name__}.")
    return raw


def load_config(source: str | os.PathLike | dict, overrides: list[str] | dict | None = None,
                check: bool = True) -> dict:
    """Read a config (a YAML path or a dict), apply overrides and defaults, validate it.

    Args:
        source: a YAML path or a dict.
        overrides: ``key=value`` strings or a nested dict applied on top.
        check: validate (the default); False leaves it to the caller, who passes
            :func:`config_problems` on to ``build_experiment`` to report every problem at once.

    Raises:
        ConfigError: listing every problem found.
    """
    raw = read_mapping(source, "Config file", "experiments/sinusoid_maml_k10.yaml")
    if overrides:
        raw = deep_merge(raw, overrides if isinstance(overrides, dict) else parse_overrides(overrides))
    config = deep_merge(DEFAULTS, raw)
    if check:
        validate(config, source=None if isinstance(source, dict) else str(source))
    return config


def _device_problem(value) -> str | None:
    """Why ``run.device`` cannot be used on this machine, or None."""
    import torch

    try:
        device = torch.device(value)
    except (RuntimeError, TypeError, ValueError):
        return (f"run.device must be a torch device such as 'cpu', 'cuda' or 'cuda:0'. Got {value!r}; "
                f"use cpu, or cuda on a machine with a GPU")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return f"run.device is {value!r} but this machine has no CUDA GPU visible to torch; use run.device=cpu"
        if device.index is not None and device.index >= torch.cuda.device_count():
            return (f"run.device is {value!r} but only {torch.cuda.device_count()} CUDA device(s) exist; "
                    f"use cuda:0 .. cuda:{torch.cuda.device_count() - 1}")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        return f"run.device is {value!r} but MPS is not available here; use run.device=cpu"
    elif device.type not in ("cpu", "cuda", "mps"):
        return f"run.device {value!r} is not supported; use cpu or cuda"
    return None


def config_problems(config: dict) -> list[str]:
    """Every problem of a config (defaults filled in) that can be seen without building it."""
    problems = []
    known = set(DEFAULTS) | {"description", "published"}
    for key in config:
        if key not in known:
            problems.append(f"unknown top-level key {key!r}{did_you_mean(key, known)} (known: {sorted(known)})")
    for section in ("outer", "run"):
        if not isinstance(config.get(section), dict):
            problems.append(f"{section} must be a mapping of {sorted(DEFAULTS[section])}. Got {config.get(section)!r}")
            continue
        for key in config[section]:
            if key not in DEFAULTS[section]:
                problems.append(f"unknown key {section}.{key}{did_you_mean(key, DEFAULTS[section])} "
                                f"(known: {sorted(DEFAULTS[section])})")
    for section in ("tasks", "model", "learner"):
        if not isinstance(config.get(section), dict):
            problems.append(f"{section} must be a mapping. Got {config.get(section)!r}")
    if isinstance(config.get("tasks"), dict) and "name" not in config["tasks"]:
        problems.append("tasks.name is missing (e.g. sinusoid, omniglot, digits)")
    if isinstance(config.get("learner"), dict) and "name" not in config["learner"]:
        problems.append("learner.name is missing (e.g. maml, metasgd, protonet)")
    if not isinstance(config.get("seed"), int) or isinstance(config.get("seed"), bool):
        problems.append(f"seed must be an integer. Got {config.get('seed')!r}")
    for key, (kind, low, strict) in _NUMBERS.items():
        try:
            value = get_path(config, key)
        except (KeyError, TypeError):
            continue
        good_type = isinstance(value, (int, float) if kind is float else int) and not isinstance(value, bool)
        if not good_type or (value <= low if strict else value < low):
            bound = f"> {low}" if strict else f">= {low}"
            problems.append(f"{key} must be {'a number' if kind is float else 'an integer'} {bound}. Got {value!r}")
    if isinstance(config.get("outer"), dict) and config["outer"].get("optimizer") not in ("adam", "sgd"):
        problems.append(f"outer.optimizer must be 'adam' or 'sgd'. Got {config['outer'].get('optimizer')!r}")
    run_section = config.get("run") if isinstance(config.get("run"), dict) else {}
    for key in ("progress", "count_flops", "device_tasks", "distributed"):
        if key in run_section and not isinstance(run_section[key], bool):
            problems.append(f"run.{key} must be true or false. Got {run_section[key]!r}")
    threads = run_section.get("threads")
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        problems.append(f"run.threads must be an integer >= 1, or null for torch's default. Got {threads!r}")
    from autometa.hypergrad import check_memory_budget, check_precision

    for key, check in (("precision", check_precision), ("memory_budget", check_memory_budget)):
        if key in run_section:
            try:
                check(run_section[key], f"run.{key}")
            except ConfigError as exc:
                problems.append(str(exc))
    if isinstance(config.get("run"), dict) and "device" in config["run"]:
        device_problem = _device_problem(config["run"]["device"])
        if device_problem:
            problems.append(device_problem)
    problems += _section_problems(config)
    return problems


def _section_problems(config: dict) -> list[str]:
    """Unknown keys in the ``tasks`` and ``model`` sections, bound against their constructors."""
    from autometa.nets import check_model_spec
    from autometa.tasks import check_tasks_spec

    problems = []
    for section, check in (("tasks", check_tasks_spec), ("model", check_model_spec)):
        spec = config.get(section)
        if isinstance(spec, dict) and (section == "model" or "name" in spec):
            try:
                check(spec)
            except ConfigError as exc:
                problems.append(str(exc))
    return problems


def invalid_config(problems: list[str], source: str | None = None) -> ConfigError:
    """One :class:`ConfigError` listing ``problems``, naming the config file when there is one."""
    where = f" {source}" if source else ""
    return ConfigError(f"Invalid config{where}:\n  - " + "\n  - ".join(problems))


def validate(config: dict, source: str | None = None) -> None:
    """Check the whole config and raise one :class:`ConfigError` listing every problem.

    Args:
        config: the config with defaults filled in.
        source: the file it was read from, named in the error.
    """
    problems = config_problems(config)
    if problems:
        raise invalid_config(problems, source)


def config_diff(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two configs."""
    keys = set(old) | set(new)
    out = []
    for key in sorted(keys):
        name = f"{prefix}{key}"
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_diff(a, b, name + ".")
        elif a != b:
            out.append(name)
    return out
