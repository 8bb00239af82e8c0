"""Architecture studies: search a cell (or take a hand-crafted one), retrain it from scratch, test it.

A config with ``kind: architecture`` is run by ``autometa run`` through :func:`run_architecture`
instead of the episodic meta-training loop::

    kind: architecture
    seed: 0
    data: {name: fashion_mnist, search_images: 20000, test_images: 10000}
    architecture: {name: darts, order: first, remedy: early_stop}   # any filler of the slot
    search: {epochs: 50}                                            # DARTS only
    retrain: {epochs: 10, batch_size: 64, lr: 0.025}                # the protocol shared by every filler
    run: {threads: 1}

The search uses ``search_images`` training images (split in two halves by the search: weights on
one, α on the other), the retraining the same images, the test the first ``test_images`` of the
official test set. The results directory holds ``config.yaml``, ``metrics.jsonl`` (one line per
search and retraining epoch), ``genotype.yaml`` and ``normal.png`` / ``reduce.png`` for cell
fillers, ``results.json`` with the test accuracy and its 95% CI over test images, and
``test_values.json`` with each test image's correctness (0/1) and loss (for paired statistics).
"""

from __future__ import annotations

import copy
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from autometa._params import did_you_mean
from autometa.errors import AutometaError, ConfigError, UnsupportedFeatureError
from autometa.experiment._config import deep_merge, parse_overrides, read_mapping
from autometa.experiment._outdir import claim_out_dir
from autometa.experiment._stats import mean_ci

ARCHITECTURE_DEFAULTS: dict = {
    "kind": "architecture",
    "seed": 0,
    "data": {"name": "fashion_mnist", "search_images": 20000, "test_images": 10000},
    "architecture": {"name": "darts"},
    "search": {"epochs": None, "steps_per_epoch": None, "eigenvalue_batches": 1, "eigenvalue_iterations": 50},
    "retrain": {"epochs": 10, "batch_size": 64, "lr": 0.025, "momentum": 0.9, "weight_decay": 3e-4,
                "grad_clip": 5.0, "max_steps": None},
    "run": {"threads": None, "progress": False},
}
DATASETS = ("fashion_mnist", "mnist")


def is_architecture_config(config) -> bool:
    """Whether ``config`` (a dict or a YAML path) is an architecture study (``kind: architecture``)."""
    try:
        raw = read_mapping(config, "Config file", "experiments/darts_fashion_mnist_first_order.yaml")
    except ConfigError:
        return False
    return raw.get("kind") == "architecture"


def load_architecture_config(source, overrides=None) -> dict:
    """The study's config with defaults filled in, every problem reported in one :class:`ConfigError`."""
    from autometa.slots import build_filler

    raw = read_mapping(source, "Config file", "experiments/darts_fashion_mnist_first_order.yaml")
    if overrides:
        raw = deep_merge(raw, overrides if isinstance(overrides, dict) else parse_overrides(overrides))
    config = deep_merge(ARCHITECTURE_DEFAULTS, raw)
    problems = []
    for key in config:
        if key not in ARCHITECTURE_DEFAULTS and key != "description":
            problems.append(f"unknown top-level key {key!r}{did_you_mean(key, ARCHITECTURE_DEFAULTS)}")
    for section in ("data", "search", "retrain", "run"):
        if not isinstance(config[section], dict):
            problems.append(f"{section} must be a mapping. Got {config[section]!r}")
            continue
        for key in config[section]:
            if key not in ARCHITECTURE_DEFAULTS[section]:
                problems.append(f"unknown key {section}.{key}{did_you_mean(key, ARCHITECTURE_DEFAULTS[section])} "
                                f"(known: {sorted(ARCHITECTURE_DEFAULTS[section])})")
    if config["data"].get("name") not in DATASETS:
        problems.append(f"data.name must be one of {list(DATASETS)}. Got {config['data'].get('name')!r}")
    for key in ("search_images", "test_images"):
        value = config["data"].get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 2:
            problems.append(f"data.{key} must be an integer >= 2. Got {value!r}")
    if not isinstance(config["seed"], int) or isinstance(config["seed"], bool):
        problems.append(f"seed must be an integer. Got {config['seed']!r}")
    try:
        build_filler("architecture", copy.deepcopy(config["architecture"]))
    except AutometaError as exc:
        problems.append(f"architecture: {exc}")
    if problems:
        raise ConfigError("Invalid architecture config:\n  - " + "\n  - ".join(problems))
    return config


def _images(name: str, train: bool, count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    from autometa.data import load_dataset

    data = load_dataset(name, train=train)
    if count > len(data.y):
        raise ConfigError(f"data asks for {count} images of the {'training' if train else 'test'} set of {name}, "
                          f"which has {len(data.y)}; ask for fewer.")
    index = (np.random.default_rng(seed).permutation(len(data.y))[:count] if train else np.arange(count))
    x = torch.from_numpy(np.asarray(data.x[index], dtype=np.float32))
    x = x / 255.0 if data.x.dtype == np.uint8 else x
    if x.dim() == 3:
        x = x[:, None]
    return (x - 0.5) / 0.5, torch.from_numpy(np.asarray(data.y[index], dtype=np.int64))


def run_architecture(config, out_dir: str | os.PathLike | None = None, resume: bool = False,
                     overrides=None, overwrite: bool = False) -> dict:
    """Search (DARTS) or take the filler's cell, retrain it from scratch, test it; see the module docstring.

    Returns:
        The content of ``results.json``: ``test`` (``accuracy`` and ``loss`` as mean, 95% CI over
        test images, n), ``search`` (CPU seconds, epochs, early stop, last diagnostics),
        ``retrain`` (CPU seconds, steps, parameters), ``genotype``, ``wall_time_s``.

    Raises:
        ConfigError: an invalid config. UnsupportedFeatureError: ``resume`` (a study restarts).
        ResultsDirError: ``out_dir`` holds other results.
    """
    from autometa.slots import build_filler
    from autometa.slots.architecture import DARTS, plot_cell, save_genotype, search, train_network

    wall = time.perf_counter()
    config = load_architecture_config(config, overrides)
    if resume:
        raise UnsupportedFeatureError("An architecture study cannot be resumed yet; start it again in a new "
                                      "directory (its search and retraining are seeded).")
    out = claim_out_dir(out_dir, "run", overwrite=overwrite) if out_dir is not None else None
    if config["run"]["threads"]:
        torch.set_num_threads(int(config["run"]["threads"]))
    if out is not None:
        (out / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    log_file = open(out / "metrics.jsonl", "a") if out is not None else None

    def log(entry: dict) -> None:
        if log_file is not None:
            log_file.write(json.dumps(entry) + "\n")
            log_file.flush()
        if config["run"]["progress"]:
            print({k: v for k, v in entry.items() if k != "genotype"}, flush=True)

    seed, data = config["seed"], config["data"]
    try:
        filler = build_filler("architecture", copy.deepcopy(config["architecture"]))
        x, y = _images(data["name"], True, data["search_images"], seed)
        test_x, test_y = _images(data["name"], False, data["test_images"], seed)
        results: dict = {"search": None}
        if isinstance(filler, DARTS):
            spec = config["search"]
            found = search(filler, x, y, 10, epochs=spec["epochs"], steps_per_epoch=spec["steps_per_epoch"],
                           eigenvalue_batches=spec["eigenvalue_batches"],
                           eigenvalue_iterations=spec["eigenvalue_iterations"], seed=seed,
                           log=lambda e: log({"phase": "search", **e}))
            last = found.history[-1]
            results["search"] = {"cpu_s": found.cpu_s, "diagnostics_cpu_s": found.diagnostics_cpu_s,
                                 "epochs": len(found.history), "steps": found.steps,
                                 "stopped_early": found.stopped_early,
                                 **{k: last[k] for k in ("parameter_free", "skip_connect", "eigenvalue",
                                                         "val_accuracy")}}
            if out is not None:
                torch.save({"normal": filler.normal.detach(), "reduce": filler.reduce.detach()}, out / "alphas.pt")
        genotype = filler.genotype()
        if genotype is not None and out is not None:
            save_genotype(genotype, out / "genotype.yaml")
            for kind in ("normal", "reduce"):
                plot_cell(genotype, kind, out / f"{kind}.png")
        spec = config["retrain"]
        trained = train_network(filler, x, y, test_x, test_y, epochs=spec["epochs"], batch_size=spec["batch_size"],
                                lr=spec["lr"], momentum=spec["momentum"], weight_decay=spec["weight_decay"],
                                grad_clip=spec["grad_clip"], max_steps=spec["max_steps"], seed=seed, num_classes=10,
                                per_example=True, log=lambda e: log({"phase": "retrain", **e}))
    finally:
        if log_file is not None:
            log_file.close()
    results.update({
        "test": {"accuracy": mean_ci(trained["correct"]), "loss": mean_ci(trained["losses"])},
        "retrain": {k: trained[k] for k in ("cpu_s", "steps", "parameters", "train_loss")},
        "genotype": genotype.to_dict() if genotype is not None else None,
        "architecture": filler.config(),
        "wall_time_s": time.perf_counter() - wall,
    })
    if out is not None:
        (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
        (out / "test_values.json").write_text(json.dumps({"accuracy": trained["correct"],
                                                          "loss": trained["losses"]}))
    return results


def load_results(path: str | os.PathLike) -> dict:
    """``results.json`` of a study directory."""
    return json.loads((Path(path) / "results.json").read_text())
