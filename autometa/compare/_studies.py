"""Studies: comparisons with their own runner and report, chosen by a config's ``study:`` key.

``autometa compare CONFIG`` hands a config with ``study: NAME`` to that study's ``run_study``, and
``autometa report DIR`` hands a directory the study wrote (its ``results.json`` names the study) to
its ``render_study``. Each study module provides ``run_study(source, out_dir, log, resume,
overwrite)`` and ``render_study(out_dir) -> Path`` (``report.md``).
"""

from __future__ import annotations

import importlib
import json
import time
from pathlib import Path
from types import ModuleType

from autometa._params import did_you_mean
from autometa.errors import ConfigError, ResultsDirError
from autometa.experiment._config import deep_merge, read_mapping
from autometa.experiment._outdir import claim_out_dir
from autometa.experiment._run import versions

STUDIES = {"noisy_labels": "autometa.compare._noisy_labels", "reward": "autometa.compare._reward_study",
           "augmentation": "autometa.compare._augmentation", "distillation": "autometa.compare._distillation",
           "architecture": "autometa.compare._architecture"}


def study_name(source) -> str | None:
    """The ``study`` a comparison config (YAML path or dict) names, or None for an ordinary comparison."""
    if source is None:
        return None
    try:
        raw = read_mapping(source, "Comparison config", "experiments/reward_gridworld.yaml")
    except ConfigError:
        return None  # the comparison loader reports it
    return raw.get("study")


def study_module(name: str) -> ModuleType:
    """The module that runs and renders the study ``name``.

    Raises:
        ConfigError: an unknown study (with the choices).
    """
    if name not in STUDIES:
        raise ConfigError(f"Unknown study {name!r}{did_you_mean(str(name), STUDIES)}. Studies: {sorted(STUDIES)}; "
                          f"leave `study` out for an ordinary comparison of fillers.")
    return importlib.import_module(STUDIES[name])


def study_of_dir(out_dir) -> str | None:
    """The study whose results ``out_dir`` holds (from ``results.json`` or ``config.json``), or None."""
    out = Path(out_dir)
    for name in ("results.json", "config.json"):
        path = out / name
        if path.is_file():
            try:
                data = json.loads(path.read_text())
            except ValueError:
                continue
            config = data.get("config", data) if isinstance(data, dict) else None
            if isinstance(config, dict) and config.get("study") in STUDIES:
                return config["study"]
            if isinstance(config, dict) and {"noise", "arms", "clean_size"} <= set(config):
                return "noisy_labels"  # written before configs carried `study`
    return None


def open_study(out_dir, config: dict, resume: bool, overwrite: bool, key: tuple[str, ...],
               defaults: dict | None = None) -> tuple[Path, Path, dict]:
    """Claim ``out_dir`` for a study and read back the runs it finished: ``(out, runs_path, done)``.

    ``done`` maps the ``key`` fields of each line of ``runs.jsonl`` to its ``result``; ``config.json`` is
    (re)written with ``config``, and ``versions.json`` gains this opening's versions (autometa, Python,
    torch, NumPy, platform), so a study resumed under other versions shows it. With ``defaults`` (the
    study's), a folder written before a setting existed resumes as if it had that setting's default.

    Raises:
        ResultsDirError: ``out_dir`` holds results and neither ``resume`` nor ``overwrite`` is set, holds
            another command's results, or holds runs of a different study config.
    """
    out = claim_out_dir(out_dir, "compare", resume=resume, overwrite=overwrite)
    runs_path, previous = out / "runs.jsonl", out / "config.json"
    before = json.loads(previous.read_text()) if resume and previous.exists() else None
    if before is not None and defaults is not None:
        before = deep_merge(defaults, before)
    if before is not None and json.loads(json.dumps(before)) != json.loads(json.dumps(config)):
        raise ResultsDirError(f"--out {str(out)!r} holds runs of a different study config; resuming would mix "
                              f"them. Choose another directory, or pass --overwrite to start again.")
    done: dict = {}
    if runs_path.exists():
        for line in runs_path.read_text().splitlines():
            entry = json.loads(line)
            done[tuple(entry.get(k) for k in key)] = entry["result"]
    previous.write_text(json.dumps(config, indent=2))
    history = out / "versions.json"
    opened = json.loads(history.read_text()) if resume and history.exists() else []
    history.write_text(json.dumps([*opened, {"opened": time.strftime("%Y-%m-%dT%H:%M:%S"), **versions()}], indent=2))
    return out, runs_path, done


def arm_problems(config: dict, arm_keys, kinds: tuple[str, ...], shape: str) -> tuple[list[str], dict]:
    """What every study config checks alike: distinct integer seeds, at least two arms, a reference among
    them, each arm a mapping with known keys and a ``kind`` in ``kinds``.

    Returns ``(problems, arms)``: ``arms`` holds the arms that are mappings, for the study's own checks;
    ``shape`` names an arm's keys in the message (e.g. ``"{kind, reward, trainer}"``).
    """
    problems = []
    seeds = config["seeds"]
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool)
                                                           for s in seeds) or len(set(seeds)) != len(seeds):
        problems.append(f"seeds must be a non-empty list of distinct integers. Got {seeds!r}")
    arms = config["arms"]
    if not isinstance(arms, dict) or len(arms) < 2:
        return problems + [f"arms must map at least two arm names to {shape}"], {}
    if config["reference"] not in arms:
        problems.append(f"reference must name one of the arms {sorted(arms)}. Got {config['reference']!r}")
    valid = {}
    for name, arm in arms.items():
        if not isinstance(arm, dict):
            problems.append(f"arm {name!r} must be a mapping. Got {arm!r}")
            continue
        problems += [f"arm {name!r}: unknown key {k!r}{did_you_mean(k, arm_keys)}" for k in arm if k not in arm_keys]
        if arm.get("kind") not in kinds:
            problems.append(f"arm {name!r} needs kind: {' or '.join(kinds)}. Got {arm.get('kind')!r}")
        valid[name] = arm
    return problems, valid
