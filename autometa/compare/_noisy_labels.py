"""The noisy-label study: hand-crafted against learned fillers of the weighting (and loss) slot.

One config names the dataset, the label-noise cells (e.g. 40% and 60% uniform, 40% pair flip),
the clean hold-out, the classifier, the budget and the arms. For every cell and seed, each arm
trains on the *same* noisy labels, clean set and batch order (all drawn from the seed), so
differences between arms are paired. Every arm reports three test accuracies, because reading
only the final epoch flatters a learned weighting that resists memorisation:

- ``final``: after the last epoch;
- ``best``: the best epoch on the test set (an oracle; an upper bound, not a result);
- ``early_stopped``: at the epoch of best accuracy on the clean set (what a practitioner
  without test labels would pick). Arms that train on the clean set (fine-tuning, and through
  the look-ahead Meta-Weight-Net and L2RW) see that set during training, so for them this
  selection is optimistic; the hand-crafted arms never touch it except to select.

Example config: ``experiments/weighting_fashion_mnist.yaml`` (``study: noisy_labels``); run it with
``autometa compare CONFIG --out DIR`` or ``benchmarks/weighting_noisy_labels.py``.
"""

from __future__ import annotations

import copy
import inspect
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from autometa._params import did_you_mean
from autometa.compare._stats import paired_difference
from autometa.compare._studies import arm_problems, open_study
from autometa.data import load_dataset
from autometa.errors import ConfigError
from autometa.experiment._config import deep_merge, read_mapping
from autometa.experiment._stats import mean_ci
from autometa.learners import NoisyLabelTrainer, clean_holdout, corrupt_labels
from autometa.learners._weighting import NOISE_KINDS
from autometa.nets import build_net
from autometa.slots import FILLERS

STUDY = "noisy_labels"
DEFAULTS: dict = {
    "study": STUDY,           # marks the config for `autometa compare`
    "dataset": "fashion_mnist",
    "noise": [{"kind": "uniform", "rate": 0.4}],
    "clean_size": 1000,
    "train_size": None,       # noisy training images after the hold-out (None: all of them)
    "test_size": None,        # test images (None: the whole test split)
    "model": {"name": "mlp", "hidden": [256]},
    "epochs": 10,
    "batch_size": 100,
    "clean_batch_size": 100,
    "trainer": {"lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "meta_lr": 1e-3, "meta_weight_decay": 1e-4},
    "seeds": [0],
    "reference": "uniform_ce",
    "arms": {},
}
ARM_KEYS = {"kind", "weighting", "loss", "finetune", "trainer"}
KINDS = ("hand-crafted", "learned")


def load_study_config(source) -> dict:
    """Read a study config (YAML path or dict), fill defaults and validate it; every problem in one error."""
    raw = read_mapping(source, "Noisy-label study config", "experiments/weighting_fashion_mnist.yaml")
    problems = [f"unknown key {k!r}{did_you_mean(k, DEFAULTS)}" for k in raw if k not in DEFAULTS]
    config = deep_merge(copy.deepcopy(DEFAULTS), raw)
    if config["study"] != STUDY:
        problems.append(f"study must be {STUDY!r} for this runner. Got {config['study']!r}")
    cells = config["noise"]
    if not isinstance(cells, list) or not cells:
        problems.append(f"noise must be a non-empty list of {{kind, rate}} cells. Got {cells!r}")
        cells = []
    for cell in cells:
        if not isinstance(cell, dict) or cell.get("kind") not in NOISE_KINDS \
                or not isinstance(cell.get("rate"), (int, float)) or not 0 <= cell["rate"] <= 1:
            problems.append(f"each noise cell needs kind in {list(NOISE_KINDS)} and a rate in [0, 1]. Got {cell!r}")
    for key in ("epochs", "batch_size", "clean_batch_size", "clean_size"):
        value = config[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            problems.append(f"{key} must be an integer >= 1. Got {value!r}")
    for key in ("train_size", "test_size"):
        value = config[key]
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            problems.append(f"{key} must be null (all) or an integer >= 1. Got {value!r}")
    more, arms = arm_problems(config, ARM_KEYS, KINDS, "{kind, weighting, loss, finetune, trainer}")
    problems += more
    for name, arm in arms.items():
        finetune = arm.get("finetune")
        if finetune is not None and (not isinstance(finetune, dict) or set(finetune) - {"epochs", "lr"}
                                     or not isinstance(finetune.get("epochs"), int) or finetune["epochs"] < 1):
            problems.append(f"arm {name!r}: finetune must be {{epochs: int >= 1, lr: float}}. Got {finetune!r}")
        try:  # builds the fillers and checks the trainer's arguments on a throw-away model
            _trainer(torch.nn.Linear(2, 2), config, arm)
        except (ConfigError, TypeError) as exc:
            problems.append(f"arm {name!r}: {exc}")
    if problems:
        raise ConfigError("Invalid noisy-label study config:\n  - " + "\n  - ".join(problems))
    return config


def _trainer(model, config: dict, arm: dict, seed: int = 0) -> NoisyLabelTrainer:
    weighting = copy.deepcopy(arm.get("weighting", "uniform"))
    weighting = {"name": weighting} if isinstance(weighting, str) else weighting
    cls = FILLERS["weighting"].get(str(weighting.get("name", "")).lower()) if isinstance(weighting, dict) else None
    if cls is not None and "seed" in inspect.signature(cls).parameters and "seed" not in weighting:
        weighting["seed"] = seed  # a learned weighting starts from a different network for every seed
    return NoisyLabelTrainer(model, weighting=weighting,
                             loss=copy.deepcopy(arm.get("loss", "cross_entropy")),
                             **{**config["trainer"], **arm.get("trainer", {})})


def load_splits(config: dict) -> tuple:
    """The dataset's training and test splits (``ArrayDataset``), loaded once per study."""
    return load_dataset(config["dataset"], train=True), load_dataset(config["dataset"], train=False)


def prepare_cell(config: dict, cell: dict, seed: int, splits: tuple | None = None) -> dict:
    """The tensors of one (noise cell, seed): noisy training set, clean set and test set.

    The clean hold-out, the training subset and the label noise are all drawn from ``seed``, so
    every arm of the cell sees the same data. ``splits`` is :func:`load_splits`'s result (loaded if None).
    """
    train, test = load_splits(config) if splits is None else splits
    clean_idx, rest = clean_holdout(train.y, config["clean_size"], seed=seed)
    rng = np.random.default_rng(seed + 7919)
    if config["train_size"] is not None:
        if config["train_size"] > len(rest):
            raise ConfigError(f"train_size={config['train_size']} exceeds the {len(rest)} images left after the "
                              f"clean hold-out; use a smaller train_size or null.")
        rest = np.sort(rng.choice(rest, config["train_size"], replace=False))
    classes = int(train.y.max()) + 1
    noisy = corrupt_labels(train.y[rest], cell["kind"], cell["rate"], classes=classes, seed=seed)
    test_idx = np.arange(len(test.y)) if config["test_size"] is None else \
        np.sort(rng.choice(len(test.y), min(config["test_size"], len(test.y)), replace=False))
    as_x = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    as_y = lambda a: torch.from_numpy(np.asarray(a, dtype=np.int64))
    return {
        "x": as_x(train.x[rest]), "y": as_y(noisy), "y_true": as_y(train.y[rest]),
        "x_clean": as_x(train.x[clean_idx]), "y_clean": as_y(train.y[clean_idx]),
        "x_test": as_x(test.x[test_idx]), "y_test": as_y(test.y[test_idx]),
        "classes": classes, "flipped": float((noisy != train.y[rest]).mean()),
    }


def run_arm(config: dict, arm: dict, data: dict, seed: int, on_epoch: Callable[[dict], None] | None = None) -> dict:
    """Train one arm on one cell's data for ``config['epochs']`` (+ fine-tuning epochs); per-epoch accuracies
    and the three summaries (final, best, early-stopped on the clean set)."""
    with torch.random.fork_rng(devices=[]):  # the classifier's initialisation, without touching global state
        torch.manual_seed(seed)
        model = build_net(config["model"], tuple(data["x"].shape[1:]), data["classes"])
    trainer = _trainer(model, config, arm, seed)
    generator = torch.Generator().manual_seed(seed)
    start_cpu, start_wall = time.process_time(), time.perf_counter()
    epochs = []

    def record(epoch: int, phase: str, train_loss: float) -> None:
        entry = {"epoch": epoch, "phase": phase, "train_loss": train_loss,
                 "test_acc": trainer.accuracy(data["x_test"], data["y_test"]),
                 "clean_acc": trainer.accuracy(data["x_clean"], data["y_clean"]),
                 "cpu_s": time.process_time() - start_cpu}
        epochs.append(entry)
        if on_epoch is not None:
            on_epoch(entry)

    for epoch in range(1, config["epochs"] + 1):
        metrics = trainer.fit_epoch(data["x"], data["y"], data["x_clean"], data["y_clean"], config["batch_size"],
                                    config["clean_batch_size"], generator)
        record(epoch, "noisy", metrics["train_loss"])
    finetune = arm.get("finetune")
    if finetune:
        for group in trainer.optimizer.param_groups:
            group["lr"] = float(finetune.get("lr", 0.01))
        for epoch in range(1, finetune["epochs"] + 1):
            metrics = trainer.fit_epoch(data["x_clean"], data["y_clean"], data["x_clean"], data["y_clean"],
                                        config["batch_size"], config["clean_batch_size"], generator)
            record(config["epochs"] + epoch, "finetune", metrics["train_loss"])
    best = max(epochs, key=lambda e: e["test_acc"])
    stopped = max(epochs, key=lambda e: e["clean_acc"])  # first epoch among ties
    result = {"seed": seed, "epochs": epochs, "final": epochs[-1]["test_acc"], "best": best["test_acc"],
              "best_epoch": best["epoch"], "early_stopped": stopped["test_acc"],
              "early_stopped_epoch": stopped["epoch"],
              "cpu_s": time.process_time() - start_cpu, "wall_s": time.perf_counter() - start_wall}
    curve = getattr(trainer.weighting, "curve", None)
    if curve is not None:
        losses, weights = curve(max_loss=8.0, points=81)
        result["weight_curve"] = {"loss": losses.tolist(), "weight": weights.tolist()}
    return result


SUMMARIES = ("final", "best", "early_stopped")


def summarize(results: dict, reference: str) -> dict:
    """Per cell and arm: mean and 95% CI of each summary over seeds, and the paired difference to ``reference``."""
    out: dict = {}
    for cell, arms in results.items():
        out[cell] = {}
        for arm, runs in arms.items():
            entry = {k: mean_ci([r[k] for r in runs]) for k in SUMMARIES}
            entry["cpu_s"] = float(np.sum([r["cpu_s"] for r in runs]))
            if arm != reference and reference in arms and len(runs) >= 2:
                ref = {r["seed"]: r for r in arms[reference]}
                pairs = [(r, ref[r["seed"]]) for r in runs if r["seed"] in ref]
                entry["vs_reference"] = {k: paired_difference([a[k] for a, _ in pairs], [b[k] for _, b in pairs])
                                         for k in SUMMARIES}
            out[cell][arm] = entry
    return out


def format_table(summary: dict) -> str:
    """A markdown table: one row per cell and arm, test accuracy (%) mean ± 95% CI for each summary."""

    def cell_text(s: dict) -> str:
        if s["mean"] is None:
            return "-"
        ci = f" ± {100 * s['ci95']:.2f}" if s["ci95"] is not None else ""
        return f"{100 * s['mean']:.2f}{ci}"

    lines = ["| noise | arm | seeds | final | best (oracle) | early-stopped (clean set) | CPU s |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for cell, arms in summary.items():
        for arm, s in arms.items():
            lines.append(f"| {cell} | {arm} | {s['final']['n']} | {cell_text(s['final'])} | {cell_text(s['best'])} | "
                         f"{cell_text(s['early_stopped'])} | {s['cpu_s']:.0f} |")
    return "\n".join(lines)


def plot_weight_curves(results: dict, path: Path) -> Path | None:
    """Weight against loss for every learned weighting function in ``results`` (needs matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    curves = [(cell, arm, r) for cell, arms in results.items() for arm, runs in arms.items() for r in runs
              if "weight_curve" in r]
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for cell, arm, r in curves:
        ax.plot(r["weight_curve"]["loss"], r["weight_curve"]["weight"], label=f"{arm}, {cell}, seed {r['seed']}")
    ax.set_xlabel("training loss of a sample")
    ax.set_ylabel("weight")
    ax.set_title("Learned weighting functions")
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def cell_name(cell: dict) -> str:
    return f"{cell['kind']}-{round(100 * cell['rate'])}%"


def run_study(source, out_dir: str | Path, log: Callable[[str], None] = print, resume: bool = False,
              overwrite: bool = False) -> dict:
    """Run every (noise cell, seed, arm) of a study config; write ``runs.jsonl``, ``results.json``, ``summary.md``,
    ``report.md`` and ``weight_curves.png`` to ``out_dir``.

    Args:
        resume: keep the finished (cell, arm, seed) runs of ``runs.jsonl`` in ``out_dir`` and run the rest
            (the config must be the one they were run with).
        overwrite: delete what ``out_dir`` holds first.

    Returns ``{"config", "results", "summary"}``.

    Raises:
        ResultsDirError: ``out_dir`` holds results and neither ``resume`` nor ``overwrite`` is set, or
            it holds another command's results, or resuming with a different config.
    """
    config = load_study_config(source)
    out, runs_path, done = open_study(out_dir, config, resume, overwrite, key=("cell", "arm", "seed"))
    results: dict = {}
    splits = None
    for cell in config["noise"]:
        name = cell_name(cell)
        results[name] = {arm: [] for arm in config["arms"]}
        for seed in config["seeds"]:
            data = None
            for arm_name, arm in config["arms"].items():
                key = (name, arm_name, seed)
                if key not in done:
                    if data is None:
                        splits = load_splits(config) if splits is None else splits
                        data = prepare_cell(config, cell, seed, splits)
                        log(f"{name} seed {seed}: {len(data['y'])} noisy images ({100 * data['flipped']:.1f}% "
                            f"flipped), {len(data['y_clean'])} clean, {len(data['y_test'])} test")
                    result = run_arm(config, arm, data, seed)
                    result["flipped"] = data["flipped"]
                    with runs_path.open("a") as f:
                        f.write(json.dumps({"cell": name, "arm": arm_name, "seed": seed, "result": result}) + "\n")
                    done[key] = result
                    log(f"  {arm_name:>16}: final {100 * result['final']:.2f}  best {100 * result['best']:.2f}  "
                        f"early-stopped {100 * result['early_stopped']:.2f}  ({result['cpu_s']:.0f} CPU s)")
                results[name][arm_name].append(done[key])
    summary = summarize(results, config["reference"])
    (out / "results.json").write_text(json.dumps({"config": config, "summary": summary, "results": results}))
    render_study(out)
    log(format_table(summary))
    return {"config": config, "results": results, "summary": summary}


def _describe(config: dict) -> str:
    trainer = ", ".join(f"{k} {v}" for k, v in config["trainer"].items())
    cells = ", ".join(cell_name(c) for c in config["noise"])
    sizes = ", ".join(f"{k} {config[k] if config[k] is not None else 'all'}"
                      for k in ("clean_size", "train_size", "test_size"))
    return (f"Dataset {config['dataset']}; noise cells {cells}; {sizes}; model {json.dumps(config['model'])}; "
            f"{config['epochs']} epochs, batch {config['batch_size']}, clean batch {config['clean_batch_size']}; "
            f"trainer {trainer}; seeds {config['seeds']}; reference {config['reference']}.")


def _differences(summary: dict, reference: str) -> list[str]:
    lines = []
    for cell, arms in summary.items():
        for arm, s in arms.items():
            vs = s.get("vs_reference")
            if not vs:
                continue
            parts = []
            for key in SUMMARIES:
                d = vs[key]
                ci = f" ± {100 * d['ci95']:.2f}" if d.get("ci95") is not None else ""
                p = f" (p {d['p_value']:.2g})" if d.get("p_value") is not None else ""
                parts.append(f"{key.replace('_', '-')} {100 * d['mean']:+.2f}{ci}{p}")
            lines.append(f"- {cell}, {arm} vs {reference}: " + "; ".join(parts))
    return lines


def render_study(out_dir) -> Path:
    """Write ``summary.md``, ``report.md`` and ``weight_curves.png`` from ``out_dir/results.json`` (what
    ``autometa report DIR`` does for a noisy-label study's folder)."""
    out = Path(out_dir)
    data = json.loads((out / "results.json").read_text())
    config, results = data["config"], data["results"]
    summary = summarize(results, config["reference"])
    table = format_table(summary)
    (out / "summary.md").write_text(table + "\n")
    lines = ["# autometa noisy-label study", "", _describe(config), "", "Arms:", ""]
    lines += [f"- **{name}** ({arm['kind']}): " + ", ".join(f"{k} `{json.dumps(v)}`" for k, v in arm.items()
                                                             if k != "kind")
              for name, arm in config["arms"].items()]
    lines += ["", "Test accuracy (%), mean ± 95% CI (Student t over seeds; no interval with one seed). "
              "final: after the last epoch; best: the best epoch on the test set (an oracle); early-stopped: "
              "the epoch of best accuracy on the clean set (optimistic for arms that train on it: fine-tuning, "
              "Meta-Weight-Net and L2RW through the look-ahead).", "", table, ""]
    differences = _differences(summary, config["reference"])
    if differences:
        lines += ["Paired differences to the reference (percentage points, 95% CI, paired t p-value):", "",
                  *differences, ""]
    if plot_weight_curves(results, out / "weight_curves.png") is not None:
        lines += ["![learned weighting functions](weight_curves.png)", ""]
    (out / "report.md").write_text("\n".join(lines))
    return out / "report.md"
