"""The data-slot study: dataset distillation (DD, DC, DSA, DM, MTT) against coreset selection.

One config names the datasets, the images per class, the arms (fillers of the data slot), the
synthetic sets per arm (``sets``: filler seeds) and the evaluation networks per set
(``eval_nets``; an arm may set its own ``sets``, ``eval_nets`` and ``first_net``). Every arm is scored by the *same*
protocol (:class:`autometa.slots.data.EvalProtocol`:
ConvNet-3 trained from scratch on the set, tested on real test images); an arm may override the
evaluation's augmentation only (DSA and DM are evaluated with DSA augmentation in their papers).
``augment: auto`` means the full DSA strategy, without flips for digit datasets.

For every (dataset, ipc, arm, set) the runner fits the filler (its CPU seconds recorded), saves the set
as ``sets/<dataset>_ipc<k>_<arm>_set<s>.npz`` (readable by ``autometa.data.load_dataset``) with a PNG
grid, and trains ``eval_nets`` fresh networks on it. The summary gives mean ± std over all
networks x sets (as papers report), the published number and the gap to it. A distiller's ``init`` may name
such a saved ``.npz`` (a warm start: refine one method's set with another, or fit on after a
``time_budget_s`` stop); the run records the file's SHA-256. With ``iterations: 0`` and ``first_net`` such an
arm adds evaluation networks to a saved set, and :func:`pool_runs` counts the set once across both folders.

Example config: ``experiments/distill_smoke.yaml`` (``study: distillation``); run it with
``autometa compare CONFIG --out DIR``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from autometa._params import did_you_mean
from autometa.compare._studies import open_study
from autometa.data import load_dataset
from autometa.errors import ConfigError
from autometa.experiment._config import _device_problem, deep_merge, read_mapping
from autometa.hypergrad import check_precision, precision, precision_state
from autometa.slots import build_filler
from autometa.slots.data import (
    EvalProtocol,
    evaluate_support,
    per_class_labels,
    save_grid,
    save_support,
    strategy_for,
)

STUDY = "distillation"
DEFAULTS: dict = {
    "study": STUDY,
    "description": "",
    "datasets": ["mnist"],
    "ipc": [1],
    "sets": [0, 1],            # filler seeds: M synthetic sets per arm
    "eval_nets": 5,            # N evaluation networks per set
    "first_net": 0,            # their indices: first_net .. first_net + N - 1 (network seed: 1000 * set + index)
    "evaluation": {"epochs": 300, "augment": None, "test_size": None},
    "train_size": None,        # real training images the fillers may use (None: all), a seeded stratified subset
    "reference": "random_real",
    "threads": 1,
    "device": "cpu",           # cpu, cuda, cuda:N, or auto (cuda when there is one)
    "precision": "fp32",       # fp32 (TF32 off, as the papers' float32), tf32, or torch's own settings
    "arms": {},
}
ARM_KEYS = {"filler", "evaluation", "sets", "eval_nets", "first_net"}
# net: ConvNet arguments (smoke tests only)
EVAL_KEYS = {"epochs", "augment", "augment_mode", "test_size", "lr", "batch_size", "net"}
# (mean, std) used to normalise the images, as the reference code does
NORMALISATION = {"mnist": (0.1307, 0.3081), "fashion_mnist": (0.2861, 0.3530)}
# Published accuracies (%) of ConvNet-3 trained on the set: Zhao et al. 2021 Table 2 (random, herding,
# k-center, forgetting, DD, DC), Zhao & Bilen 2021 (DSA). Keyed by (dataset, filler name, ipc). The paper's
# forgetting row likely kept the least forgotten images of the whole pool, not the most forgotten of each class
# as the `forgetting` filler does (benchmarks/forgetting_selection.py; benchmarks/RESULTS.md, stop 23).
PUBLISHED = {
    ("mnist", "random_real", 1): 64.9, ("mnist", "random_real", 10): 95.1, ("mnist", "random_real", 50): 97.9,
    ("mnist", "herding", 1): 89.2, ("mnist", "herding", 10): 93.7, ("mnist", "herding", 50): 94.8,
    ("mnist", "k_center", 1): 89.3, ("mnist", "k_center", 10): 84.4, ("mnist", "k_center", 50): 97.4,
    ("mnist", "forgetting", 1): 35.5, ("mnist", "forgetting", 10): 68.1, ("mnist", "forgetting", 50): 88.2,
    ("mnist", "dd", 10): 79.5,
    ("mnist", "dc", 1): 91.7, ("mnist", "dc", 10): 97.4, ("mnist", "dc", 50): 98.8,
    ("mnist", "dsa", 1): 88.7, ("mnist", "dsa", 10): 97.8, ("mnist", "dsa", 50): 99.2,
    ("fashion_mnist", "random_real", 1): 51.4, ("fashion_mnist", "random_real", 10): 73.8,
    ("fashion_mnist", "random_real", 50): 82.5,
    ("fashion_mnist", "herding", 1): 67.0, ("fashion_mnist", "herding", 10): 71.1,
    ("fashion_mnist", "herding", 50): 71.9,
    ("fashion_mnist", "k_center", 1): 66.9, ("fashion_mnist", "k_center", 10): 54.7,
    ("fashion_mnist", "k_center", 50): 68.3,
    ("fashion_mnist", "forgetting", 1): 42.0, ("fashion_mnist", "forgetting", 10): 53.9,
    ("fashion_mnist", "forgetting", 50): 55.0,
    ("fashion_mnist", "dc", 1): 70.5, ("fashion_mnist", "dc", 10): 82.3, ("fashion_mnist", "dc", 50): 83.6,
    ("fashion_mnist", "dsa", 1): 70.6, ("fashion_mnist", "dsa", 10): 84.6, ("fashion_mnist", "dsa", 50): 88.7,
}


def _is_int(value, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _filler_spec(arm: dict, ipc: int, seed: int, dataset: str) -> dict:
    spec = copy.deepcopy(arm["filler"])
    spec = {"name": spec} if isinstance(spec, str) else spec
    spec.update(ipc=ipc, seed=seed)
    if spec.get("augment") == "auto" or (isinstance(spec.get("augment"), str) and "flip" in spec["augment"]):
        spec["augment"] = strategy_for(dataset, "color_crop_cutout_flip_scale_rotate" if spec["augment"] == "auto"
                                       else spec["augment"])
    return spec


def _init_file(spec: dict) -> Path | None:
    """The saved set (``init: path/to/set.npz``, relative to the working directory) a filler spec starts from."""
    init = spec.get("init")
    return Path(init) if isinstance(init, str) and init.endswith(".npz") else None


def load_init(path: Path, ipc: int, data: dict) -> torch.Tensor:
    """A set saved by a study (``save_support``'s ``.npz``) as starting images, normalised as ``data["x"]``,
    its labels checked to be ``ipc`` of every class in class order (the distiller checks the image shape)."""
    saved = load_dataset(str(path))
    x, y = np.asarray(saved.x, dtype=np.float32), np.asarray(saved.y)
    classes = int(data["y"].max()) + 1
    expected = per_class_labels(classes, ipc).numpy()
    if y.shape != expected.shape or (y != expected).any():
        raise ConfigError(f"init: {str(path)!r} holds {np.bincount(y, minlength=classes).tolist()} images per "
                          f"class; a start for ipc={ipc} needs {ipc} of each of {classes} classes, in class order.")
    return ((torch.from_numpy(x) - data["mean"]) / data["std"]).to(data["x"].device)


def protocol_for(config: dict, arm: dict, dataset: str) -> tuple[EvalProtocol, int | None]:
    """The evaluation protocol of an arm (the study's, with the arm's overrides) and its test size."""
    evaluation = {**config["evaluation"], **arm.get("evaluation", {})}
    augment, mode = evaluation.get("augment"), evaluation.get("augment_mode", "dsa")
    if augment == "auto":
        augment = strategy_for(dataset)
    elif isinstance(augment, str) and mode == "dsa":
        augment = strategy_for(dataset, augment)
    net = evaluation.get("net") or {}
    if not isinstance(net, dict):
        raise ConfigError(f"evaluation.net must be a mapping of ConvNet arguments (width, depth). Got {net!r}.")
    protocol = EvalProtocol(epochs=evaluation["epochs"], augment=augment, augment_mode=mode,
                            lr=evaluation.get("lr", 0.01),
                            batch_size=evaluation.get("batch_size", 256), net=tuple(sorted(net.items())))
    return protocol, evaluation.get("test_size")


def _networks_problems(where: str, first_net, eval_nets) -> list[str]:
    """``first_net`` must be an integer >= 0 and leave the networks of a set within its 1000 seeds."""
    if not _is_int(first_net, 0):
        return [f"{where}first_net must be an integer >= 0. Got {first_net!r}"]
    if _is_int(eval_nets, 1) and first_net + eval_nets > 1000:
        return [f"{where}first_net + eval_nets must be at most 1000 (network seeds are 1000 * set + index). "
                f"Got {first_net} + {eval_nets}"]
    return []


def load_study_config(source) -> dict:
    """Read a distillation study config (YAML path or dict), fill defaults and validate it; every problem in
    one error."""
    raw = read_mapping(source, "Distillation study config", "experiments/distill_smoke.yaml")
    problems = [f"unknown key {k!r}{did_you_mean(k, DEFAULTS)}" for k in raw if k not in DEFAULTS]
    config = deep_merge(copy.deepcopy(DEFAULTS), raw)
    datasets = config["datasets"]
    if not isinstance(datasets, list) or not datasets or any(d not in ("mnist", "fashion_mnist", "digits")
                                                             for d in datasets):
        problems.append(f"datasets must be a non-empty list among mnist, fashion_mnist, digits. Got {datasets!r}")
    for key in ("ipc", "sets"):
        value = config[key]
        if not isinstance(value, list) or not value or not all(_is_int(v, 0 if key == "sets" else 1) for v in value):
            problems.append(f"{key} must be a non-empty list of integers. Got {value!r}")
    for key in ("eval_nets", "threads"):
        if not _is_int(config[key], 1):
            problems.append(f"{key} must be an integer >= 1. Got {config[key]!r}")
    problems += _networks_problems("", config["first_net"], config["eval_nets"])
    if config["device"] != "auto" and _device_problem(config["device"]):
        problems.append(_device_problem(config["device"]).replace("run.device", "device"))
    try:
        check_precision(config["precision"], "precision")
    except ConfigError as exc:
        problems.append(str(exc))
    if config["train_size"] is not None and not _is_int(config["train_size"], 1):
        problems.append(f"train_size must be null (all) or an integer >= 1. Got {config['train_size']!r}")
    arms = config["arms"]
    if not isinstance(arms, dict) or not arms:
        problems.append("arms must map arm names to {filler: {name: ..., ...}, evaluation: {...}}")
        arms = {}
    if arms and config["reference"] not in arms:
        problems.append(f"reference must name one of the arms {sorted(arms)}. Got {config['reference']!r}")
    for name, arm in arms.items():
        if not isinstance(arm, dict) or "filler" not in arm:
            problems.append(f"arm {name!r} must be a mapping with a `filler` (a data-slot filler spec)")
            continue
        problems += [f"arm {name!r}: unknown key {k!r}{did_you_mean(k, ARM_KEYS)}" for k in arm if k not in ARM_KEYS]
        sets = arm.get("sets", config["sets"])
        if not isinstance(sets, list) or not sets or not all(_is_int(v, 0) for v in sets):
            problems.append(f"arm {name!r}: sets must be a non-empty list of integers. Got {sets!r}")
        if "eval_nets" in arm and not _is_int(arm["eval_nets"], 1):
            problems.append(f"arm {name!r}: eval_nets must be an integer >= 1. Got {arm['eval_nets']!r}")
        elif "eval_nets" in arm or "first_net" in arm:
            problems += _networks_problems(f"arm {name!r}: ", arm.get("first_net", config["first_net"]),
                                           arm.get("eval_nets", config["eval_nets"]))
        evaluation = {**config["evaluation"], **arm.get("evaluation", {})}
        problems += [f"arm {name!r}: unknown evaluation key {k!r}{did_you_mean(k, EVAL_KEYS)}"
                     for k in evaluation if k not in EVAL_KEYS]
        try:
            for ipc in config["ipc"] if isinstance(config["ipc"], list) else []:
                spec = _filler_spec(arm, ipc, 0, "mnist")
                init = _init_file(spec)
                if init is not None:
                    if not init.is_file():
                        raise ConfigError(f"init names the saved set {str(init.resolve())!r}, which does not "
                                          f"exist. Name a sets/*.npz file a study wrote.")
                    spec["init"] = "real"  # the file's contents are checked against the data at run time
                build_filler("data", spec)
            protocol_for(config, arm, "mnist")
        except (ConfigError, TypeError) as exc:
            problems.append(f"arm {name!r}: {exc}")
    if problems:
        raise ConfigError("Invalid distillation study config:\n  - " + "\n  - ".join(problems))
    return config


def load_data(config: dict, dataset: str) -> dict:
    """Normalised train/test tensors of ``dataset`` (train: the seeded ``train_size`` subset if set)."""
    if dataset in NORMALISATION:
        train, test = load_dataset(dataset, train=True), load_dataset(dataset, train=False)
    else:  # digits: no fixed test split, so a seeded 80/20 split
        full = load_dataset(dataset)
        order = np.random.default_rng(0).permutation(len(full.y))
        cut = int(0.8 * len(order))
        train, test = full.subset(np.sort(order[:cut])), full.subset(np.sort(order[cut:]))
    mean, std = NORMALISATION.get(dataset, (float(train.x.mean()), float(train.x.std())))
    x = torch.from_numpy(np.ascontiguousarray(train.x, dtype=np.float32))
    y = torch.from_numpy(train.y.astype(np.int64))
    if config["train_size"] is not None and config["train_size"] < len(y):
        g = torch.Generator().manual_seed(12345)
        keep = torch.randperm(len(y), generator=g)[:config["train_size"]].sort().values
        x, y = x[keep], y[keep]
    return {"x": (x - mean) / std, "y": y,
            "x_test": (torch.from_numpy(np.ascontiguousarray(test.x, dtype=np.float32)) - mean) / std,
            "y_test": torch.from_numpy(test.y.astype(np.int64)), "mean": mean, "std": std,
            "class_names": train.class_names}


def _test_subset(data: dict, size: int | None) -> tuple:
    if size is None or size >= len(data["y_test"]):
        return data["x_test"], data["y_test"]
    keep = torch.randperm(len(data["y_test"]), generator=torch.Generator().manual_seed(54321))[:size]
    keep = keep.to(data["y_test"].device)
    return data["x_test"][keep], data["y_test"][keep]


def set_stem(dataset: str, ipc, arm: str, seed: int) -> str:
    """The file name (without suffix) of a saved synthetic set in a study's ``sets/``."""
    return f"{dataset}_ipc{ipc}_{arm}_set{seed}"


def run_one(config: dict, arm_name: str, arm: dict, dataset: str, ipc: int, seed: int, data: dict, out: Path,
            log: Callable[[str], None] = print, fitted: dict | None = None) -> dict:
    """Fit one filler (one synthetic set), save it, and evaluate ``eval_nets`` networks on it.

    ``fitted`` (a dict kept across calls) lets arms that differ only in their evaluation share one fit: a
    filler spec already fitted on the same dataset is reused, its fit costs reported again."""
    spec = _filler_spec(arm, ipc, seed, dataset)
    key = (dataset, json.dumps(spec, sort_keys=True))
    if fitted is not None and key in fitted:
        x_set, y_set, fit = fitted[key]
        log(f"    [{dataset} ipc{ipc} {arm_name} set{seed}] the same filler was fitted for another arm: reused")
    else:
        init = _init_file(spec)  # a warm start: its hash is recorded, so a moved or rewritten file is noticed
        start = None if init is None else load_init(init, ipc, data)
        init_sha256 = None if init is None else hashlib.sha256(init.read_bytes()).hexdigest()
        filler = build_filler("data", spec if start is None else {**spec, "init": start})
        start_cpu, start_wall = time.process_time(), time.perf_counter()
        filler.fit(data["x"], data["y"], log=lambda m: log(f"    [{dataset} ipc{ipc} {arm_name} set{seed}] {m}"))
        history = filler.history
        fit = {"fit_cpu_s": time.process_time() - start_cpu, "fit_wall_s": time.perf_counter() - start_wall,
               "loss_first": history[0].get("loss") if history else None,
               "loss_last": history[-1].get("loss") if history else None, "iterations": len(history),
               "budget_stop": bool(getattr(filler, "budget_stop", False))}
        if init_sha256 is not None:
            fit["init_sha256"] = init_sha256
        x_set, y_set = (t.detach() for t in filler.support())
        if fitted is not None:
            fitted[key] = (x_set, y_set, fit)
    stem = set_stem(dataset, ipc, arm_name, seed)
    save_support(out / "sets" / f"{stem}.npz", x_set, y_set, data["mean"], data["std"], data["class_names"],
                 method=spec["name"], source=dataset, ipc=ipc, seed=seed)
    save_grid(out / "sets" / f"{stem}.png", x_set, y_set, data["mean"], data["std"], data["class_names"],
              title=f"{arm_name} on {dataset}, {ipc}/class, set {seed}")
    protocol, test_size = protocol_for(config, arm, dataset)
    x_test, y_test = _test_subset(data, test_size)
    first = arm.get("first_net", config["first_net"])
    seeds = [1000 * seed + first + k for k in range(arm.get("eval_nets", config["eval_nets"]))]
    evaluation = evaluate_support(x_set, y_set, x_test, y_test, protocol, seeds=seeds,
                                  classes=int(data["y"].max()) + 1)
    return {"filler": spec, **fit, "eval_cpu_s": evaluation["cpu_s"], "eval_wall_s": evaluation["wall_s"],
            "accuracies": evaluation["accuracies"], "eval_seeds": seeds, "test_images": len(y_test),
            "protocol": {"epochs": protocol.epochs, "augment": protocol.augment, "augment_mode": protocol.augment_mode}}


def summarize(config: dict, results: dict) -> dict:
    """Per (dataset, ipc, arm): accuracy mean and std (%) over networks x sets, CPU seconds, published, gap."""
    out = {}
    for key, runs in results.items():
        dataset, ipc, arm = key.split("|")
        accs = [100 * a for r in runs for a in r["accuracies"]]
        name = config["arms"][arm]["filler"]
        name = name if isinstance(name, str) else name["name"]
        published = PUBLISHED.get((dataset, name, int(ipc)))
        mean = float(np.mean(accs)) if accs else None
        out[key] = {"dataset": dataset, "ipc": int(ipc), "arm": arm, "n": len(accs), "sets": len(runs),
                    "mean": mean, "std": float(np.std(accs)) if accs else None,
                    "fit_cpu_s_per_set": float(np.mean([r["fit_cpu_s"] for r in runs])) if runs else None,
                    "fit_wall_s_per_set": float(np.mean([r["fit_wall_s"] for r in runs])) if runs else None,
                    "eval_cpu_s_per_net": float(np.sum([r["eval_cpu_s"] for r in runs]) / max(len(accs), 1)),
                    "eval_wall_s_per_net": float(np.sum([r.get("eval_wall_s", float("nan")) for r in runs])
                                                 / max(len(accs), 1)),
                    "published": published, "gap": None if published is None or mean is None else mean - published}
    return out


def _network_seeds(result: dict, set_seed: int) -> list[int]:
    """The evaluation networks' seeds of a run (runs written before ``eval_seeds`` was recorded used 0..N-1)."""
    return result.get("eval_seeds") or [1000 * set_seed + k for k in range(len(result["accuracies"]))]


def _pool_set(key: str, set_seed: int, runs: list[dict]) -> dict:
    """One synthetic set scored in several folders: the run that fitted it, its networks and those added by runs
    that loaded its saved file unchanged (``init: set.npz``, ``iterations: 0``); checked to be the same set."""
    if len(runs) == 1:
        return {**runs[0], "eval_seeds": _network_seeds(runs[0], set_seed), "pooled_from": [runs[0]["folder"]]}
    where = f"{key} set {set_seed}"
    rescored = [r for r in runs if r.get("init_sha256") and r["iterations"] == 0]
    fitted = [r for r in runs if r not in rescored]
    if len(fitted) != 1:
        raise ConfigError(f"{where}: {len(fitted)} of the folders {[r['folder'] for r in runs]} fitted it; pooled "
                          f"networks must score one set. Pass the folder that fitted it once, with those that only "
                          f"scored its saved file (init: <set>.npz, iterations: 0).")
    (fit,) = fitted
    dataset, ipc, _ = key.split("|")
    saved = Path(fit["folder"]) / "sets" / f"{set_stem(dataset, ipc, fit['folder_arm'], set_seed)}.npz"
    digest = hashlib.sha256(saved.read_bytes()).hexdigest() if saved.is_file() else None
    for r in rescored:
        if r["init_sha256"] != digest:
            raise ConfigError(f"{where}: {r['folder']} scored a file whose SHA-256 is {r['init_sha256'][:12]}..., "
                              f"but the set {fit['folder']} saved ({saved}) "
                              f"{'is missing' if digest is None else f'hashes to {digest[:12]}...'}: not the same "
                              f"set. Pool only runs that loaded this folder's saved set unchanged.")
    for r in runs:
        if r["filler"]["name"] != fit["filler"]["name"] or r["protocol"] != fit["protocol"]:
            raise ConfigError(f"{where}: {r['folder']} ran filler {r['filler']['name']!r} with protocol "
                              f"{r['protocol']}, {fit['folder']} {fit['filler']['name']!r} with {fit['protocol']}; "
                              f"pooled networks must share both.")
    ordered = [fit, *rescored]
    seeds = [s for r in ordered for s in _network_seeds(r, set_seed)]
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"{where}: network seeds {seeds} repeat across {[r['folder'] for r in ordered]}; the "
                          f"same network would count twice. Give added networks their own first_net.")
    return {**fit, "accuracies": [a for r in ordered for a in r["accuracies"]], "eval_seeds": seeds,
            "eval_cpu_s": sum(r["eval_cpu_s"] for r in ordered),
            "eval_wall_s": sum(r.get("eval_wall_s", float("nan")) for r in ordered),
            "pooled_from": [r["folder"] for r in ordered]}


def pool_runs(folders, aliases: dict[str, str] | None = None) -> tuple[dict, dict]:
    """The finished runs of several study folders, keyed as :func:`summarize` takes them (``(config, results)``).

    Runs of the same (dataset, ipc, arm) pool; a set (filler seed) scored in more than one folder counts once,
    with the networks of all of them: the run that fitted it and runs that added networks to its saved file
    (``init: <set>.npz``, ``iterations: 0``, ``first_net: K``). Those must have loaded that very file (SHA-256),
    with the same filler and protocol and no network seed twice; otherwise a :class:`ConfigError` says which.
    ``aliases`` renames arms (``{"dc1": "dc"}``) so an arm that added networks pools with the one that fitted."""
    aliases = aliases or {}
    arms: dict = {}
    by_set: dict = {}
    for folder in map(Path, folders):
        if not (folder / "config.json").is_file():
            raise ConfigError(f"{folder} holds no config.json: not a distillation study folder.")
        for name, arm in json.loads((folder / "config.json").read_text())["arms"].items():
            arms.setdefault(aliases.get(name, name), arm)
        runs_path = folder / "runs.jsonl"
        for line in runs_path.read_text().splitlines() if runs_path.is_file() else []:
            entry = json.loads(line)
            key = f"{entry['dataset']}|{entry['ipc']}|{aliases.get(entry['arm'], entry['arm'])}"
            run = {**entry["result"], "folder": str(folder), "folder_arm": entry["arm"]}
            by_set.setdefault(key, {}).setdefault(entry["set"], []).append(run)
    results = {key: [_pool_set(key, seed, runs) for seed, runs in sorted(sets.items())]
               for key, sets in by_set.items()}
    return {"arms": arms}, results


def format_table(summary: dict) -> str:
    """A markdown table of the summary."""
    lines = ["| dataset | ipc | arm | networks / sets | accuracy % (mean ± std) | published | gap | fit CPU s / set | "
             "fit wall s / set | eval CPU s / net | eval wall s / net |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for s in summary.values():
        pub = "-" if s["published"] is None else f"{s['published']:.1f}"
        gap = "-" if s["gap"] is None else f"{s['gap']:+.1f}"
        lines.append(f"| {s['dataset']} | {s['ipc']} | {s['arm']} | {s['n']} / {s['sets']} | "
                     f"{s['mean']:.2f} ± {s['std']:.2f} | {pub} | {gap} | {s['fit_cpu_s_per_set']:.0f} | "
                     f"{s.get('fit_wall_s_per_set', float('nan')):.0f} | {s['eval_cpu_s_per_net']:.0f} | "
                     f"{s.get('eval_wall_s_per_net', float('nan')):.1f} |")
    return "\n".join(lines)


def run_study(source, out_dir: str | Path, log: Callable[[str], None] = print, resume: bool = False,
              overwrite: bool = False) -> dict:
    """Run every (dataset, ipc, arm, set) of a study config; write ``runs.jsonl``, ``results.json``,
    ``summary.md`` and ``sets/`` (``.npz`` + ``.png`` per synthetic set) to ``out_dir``.

    Args:
        resume: keep the finished runs of ``runs.jsonl`` in ``out_dir`` and run the rest (same config only).
        overwrite: delete what ``out_dir`` holds first.

    Raises:
        ResultsDirError: ``out_dir`` holds results and neither ``resume`` nor ``overwrite`` is set, or it
            holds another config's runs.
    """
    config = load_study_config(source)
    torch.set_num_threads(config["threads"])
    device = torch.device("cuda" if config["device"] == "auto" and torch.cuda.is_available()
                          else "cpu" if config["device"] == "auto" else config["device"])
    out, runs_path, done = open_study(out_dir, config, resume, overwrite, key=("dataset", "ipc", "arm", "set"),
                                         defaults=DEFAULTS)
    with precision(config["precision"], device):
        environment = {"device": str(device), "device_name": torch.cuda.get_device_name(device)
                       if device.type == "cuda" else None, "threads": torch.get_num_threads(), **precision_state()}
        results = _run_plan(config, out, runs_path, done, device, log)
    summary = summarize(config, results)
    (out / "results.json").write_text(json.dumps({"config": config, "environment": environment, "summary": summary,
                                                  "results": results}))
    render_study(out)
    log(format_table(summary))
    return {"config": config, "results": results, "summary": summary, "environment": environment}


def _run_plan(config: dict, out: Path, runs_path: Path, done: dict, device: torch.device, log) -> dict:
    results: dict = {}
    fitted: dict = {}
    for dataset in config["datasets"]:
        data = None
        for ipc in config["ipc"]:
            plan = [(seed, arm_name, arm) for seed in sorted({s for a in config["arms"].values()
                                                                for s in a.get("sets", config["sets"])})
                    for arm_name, arm in config["arms"].items() if seed in arm.get("sets", config["sets"])]
            for arm_name in config["arms"]:
                results[f"{dataset}|{ipc}|{arm_name}"] = []
            for seed, arm_name, arm in plan:  # set 0 of every arm first, so a cut-short study covers every arm
                runs = results[f"{dataset}|{ipc}|{arm_name}"]
                key = (dataset, ipc, arm_name, seed)
                if key not in done:
                    if data is None:
                        data = {k: v.to(device) if isinstance(v, torch.Tensor) else v
                                for k, v in load_data(config, dataset).items()}
                    result = run_one(config, arm_name, arm, dataset, ipc, seed, data, out, log, fitted)
                    with runs_path.open("a") as f:
                        f.write(json.dumps({"dataset": dataset, "ipc": ipc, "arm": arm_name, "set": seed,
                                            "result": result}) + "\n")
                    done[key] = result
                    log(f"{dataset} ipc {ipc} {arm_name:>12} set {seed}: "
                        f"{' '.join(f'{100 * a:.1f}' for a in result['accuracies'])}  "
                        f"(fit {result['fit_cpu_s']:.0f} CPU s, eval {result['eval_cpu_s']:.0f} CPU s)")
                runs.append(done[key])
    return results


def render_study(out_dir) -> Path:
    """Write ``summary.md`` and ``report.md`` (with the synthetic-set grids of ``sets/``) from ``results.json``."""
    out = Path(out_dir)
    data = json.loads((out / "results.json").read_text())
    config = data["config"]
    table = format_table(summarize(config, data["results"]))
    (out / "summary.md").write_text(table + "\n")
    lines = ["# autometa distillation study", ""]
    if config.get("description"):
        lines += [config["description"].strip(), ""]
    lines += [table, ""]
    lines += [f"![{png.stem}](sets/{png.name})" for png in sorted((out / "sets").glob("*.png"))]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    return out / "report.md"
