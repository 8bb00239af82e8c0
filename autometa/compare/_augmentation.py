"""The augmentation study: a searched DADA policy against hand-crafted policies on reduced data.

One config names the dataset, the search budget (a train/validation split of the reduced set),
the final-training budgets (one entry per training-set size; ``null`` = the whole training split),
the network, the seeds and the arms. For every seed, a class-balanced subset of
``search.train_size + search.val_size`` images is drawn; a ``learned`` arm searches its policy on
that split (:func:`~autometa.slots.augmentation.dada_search`) and freezes it; then every arm trains
a fresh network, from the same initialisation and in the same batch order, on each final set (the
same subset for the reduced size) and is tested on the official test set. Differences between
arms are therefore paired by seed. The CPU seconds of the search and of each final training are
recorded.

Example config: ``experiments/augmentation_fashion_mnist.yaml`` (``study: augmentation``); run it with
``autometa compare CONFIG --out DIR``.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from autometa._params import did_you_mean
from autometa.compare._stats import paired_difference
from autometa.compare._studies import arm_problems, open_study
from autometa.data import load_dataset
from autometa.errors import ConfigError
from autometa.experiment._config import deep_merge, read_mapping
from autometa.experiment._stats import mean_ci
from autometa.nets import build_net
from autometa.slots import build_filler
from autometa.slots.augmentation import DADA, dada_search

STUDY = "augmentation"
EXAMPLE = "experiments/augmentation_fashion_mnist.yaml"
DEFAULTS: dict = {
    "study": STUDY,
    "dataset": "fashion_mnist",
    "search": {"train_size": 2000, "val_size": 2000, "epochs": 5, "batch_size": 64, "lr": 0.05,
               "meta_lr": 5e-3, "policy_estimator": "relax"},
    "final": [{"train_size": 4000, "epochs": 20}],
    "test_size": None,
    "model": {"name": "conv4", "hidden": 32},
    "trainer": {"batch_size": 128, "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4},
    "seeds": [0, 1, 2],
    "reference": "none",
    "arms": {},
}
ARM_KEYS = {"kind", "augmentation", "label"}
KINDS = ("hand-crafted", "learned")


def _int_at_least(value, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def load_study_config(source) -> dict:
    """Read an augmentation study config, fill defaults and validate it; every problem in one error."""
    raw = read_mapping(source, "Augmentation study config", EXAMPLE)
    problems = [f"unknown key {k!r}{did_you_mean(k, DEFAULTS)}" for k in raw if k not in DEFAULTS]
    config = deep_merge(copy.deepcopy(DEFAULTS), raw)
    if "final" in raw:
        config["final"] = raw["final"]
    if config["study"] != STUDY:
        problems.append(f"study must be {STUDY!r} for this runner. Got {config['study']!r}")
    search = config["search"]
    for key in ("train_size", "val_size", "epochs", "batch_size"):
        if not _int_at_least(search.get(key), 1):
            problems.append(f"search.{key} must be an integer >= 1. Got {search.get(key)!r}")
    unknown = set(search) - set(DEFAULTS["search"])
    problems += [f"search: unknown key {k!r}{did_you_mean(k, DEFAULTS['search'])}" for k in sorted(unknown)]
    finals = config["final"]
    if not isinstance(finals, list) or not finals:
        problems.append("final must be a non-empty list of {train_size: int or null, epochs: int}")
        finals = []
    for entry in finals:
        size_ok = isinstance(entry, dict) and (entry.get("train_size") is None or _int_at_least(entry["train_size"], 1))
        if not isinstance(entry, dict) or set(entry) - {"train_size", "epochs"} or not _int_at_least(
                entry.get("epochs"), 1) or not size_ok:
            problems.append(f"each final entry needs train_size (an integer, or null for the whole split) and "
                            f"epochs >= 1. Got {entry!r}")
    for key in ("batch_size",):
        if not _int_at_least(config["trainer"].get(key), 1):
            problems.append(f"trainer.{key} must be an integer >= 1. Got {config['trainer'].get(key)!r}")
    more, arms = arm_problems(config, ARM_KEYS, KINDS, "{kind, augmentation}")
    problems += more
    for name, arm in arms.items():
        try:
            filler = build_filler("augmentation", copy.deepcopy(arm.get("augmentation", "none")))
        except ConfigError as exc:
            problems.append(f"arm {name!r}: {exc}")
            continue
        if arm.get("kind") == "learned" and not (isinstance(filler, DADA) and filler.trainable):
            problems.append(f"arm {name!r} is learned, so its augmentation must be a trainable policy (dada). "
                            f"Got {type(filler).__name__}")
        if arm.get("kind") == "hand-crafted" and filler.meta_params():
            problems.append(f"arm {name!r} is hand-crafted but {type(filler).__name__} has meta-parameters; use "
                            f"kind: learned (it is searched first) or a fixed policy")
    if problems:
        raise ConfigError("Invalid augmentation study config:\n  - " + "\n  - ".join(problems))
    return config


def _balanced_subset(labels: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """``size`` indices with (as nearly as possible) the same number per class, in random order."""
    classes = np.unique(labels)
    per_class = [size // len(classes) + (i < size % len(classes)) for i in range(len(classes))]
    picks = [rng.choice(np.flatnonzero(labels == c), n, replace=False) for c, n in zip(classes, per_class)]
    return rng.permutation(np.concatenate(picks))


def prepare_seed(config: dict, seed: int, splits: tuple) -> dict:
    """The tensors of one seed: the reduced set (search train / validation halves), the whole training
    split and the test set."""
    train, test = splits
    rng = np.random.default_rng(seed)
    search = config["search"]
    reduced = _balanced_subset(train.y, search["train_size"] + search["val_size"], rng)
    test_idx = np.arange(len(test.y)) if config["test_size"] is None else \
        np.sort(rng.choice(len(test.y), min(config["test_size"], len(test.y)), replace=False))
    as_x = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    as_y = lambda a: torch.from_numpy(np.asarray(a, dtype=np.int64))
    return {"reduced": reduced, "train_x": as_x(train.x), "train_y": as_y(train.y),
            "x_test": as_x(test.x[test_idx]), "y_test": as_y(test.y[test_idx]),
            "classes": int(train.y.max()) + 1, "search_split": search["train_size"]}


def _model(config: dict, data: dict, seed: int) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):  # the initialisation, without touching global state
        torch.manual_seed(seed)
        return build_net(config["model"], tuple(data["x_test"].shape[1:]), data["classes"])


@torch.no_grad()
def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
    model.eval()
    correct = sum((model(x[i:i + batch_size]).argmax(-1) == y[i:i + batch_size]).sum().item()
                  for i in range(0, len(y), batch_size))
    return correct / max(len(y), 1)


def search_policy(config: dict, arm: dict, data: dict, seed: int, log: Callable[[str], None]) -> tuple[DADA, dict]:
    """Search a learned arm's policy on the seed's reduced set (first half trains, second validates)."""
    policy = build_filler("augmentation", copy.deepcopy(arm["augmentation"]))
    search = config["search"]
    idx, split = data["reduced"], data["search_split"]
    x, y = data["train_x"][idx], data["train_y"][idx]
    model = _model(config, data, seed + 1000)  # the search's own network, discarded afterwards
    result = dada_search(policy, model, x[:split], y[:split], x[split:], y[split:], epochs=search["epochs"],
                         batch_size=search["batch_size"], lr=search["lr"], meta_lr=search["meta_lr"],
                         policy_estimator=search["policy_estimator"], seed=seed)
    result["val_acc"] = accuracy(model, x[split:], y[split:])
    policy.requires_grad_(False)
    learned = {k: v.tolist() for k, v in policy.policy().items()}
    log(f"    search: {len(result['history'])} steps, {result['cpu_s']:.0f} CPU s, search-network val acc "
        f"{100 * result['val_acc']:.2f}")
    return policy, {"cpu_s": result["cpu_s"], "wall_s": result["wall_s"], "val_acc": result["val_acc"],
                    "policy": learned, "sub_policies": policy.sub_policies(),
                    "init": {"probability": policy.init_probability, "magnitude": policy.init_magnitude},
                    "val_loss": [h["val_loss"] for h in result["history"]]}


def train_final(config: dict, policy, data: dict, final: dict, seed: int) -> dict:
    """Train a fresh network with ``policy`` on the final set; the test accuracy after the last epoch."""
    if final["train_size"] is None:
        x, y = data["train_x"], data["train_y"]
    else:
        idx = data["reduced"][:final["train_size"]] if final["train_size"] <= len(data["reduced"]) else None
        if idx is None:
            rng = np.random.default_rng(seed + 104729)
            idx = rng.choice(len(data["train_y"]), final["train_size"], replace=False)
        x, y = data["train_x"][idx], data["train_y"][idx]
    model = _model(config, data, seed)
    trainer = config["trainer"]
    optimizer = torch.optim.SGD(model.parameters(), lr=trainer["lr"], momentum=trainer["momentum"],
                                weight_decay=trainer["weight_decay"], nesterov=True)
    steps_per_epoch = -(-len(y) // trainer["batch_size"])
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, final["epochs"] * steps_per_epoch)
    order_generator = torch.Generator().manual_seed(seed)
    augment_generator = torch.Generator().manual_seed(seed + 1)
    start_cpu, start_wall = time.process_time(), time.perf_counter()
    curve = []
    for _epoch in range(final["epochs"]):
        model.train()
        order = torch.randperm(len(y), generator=order_generator)
        total = 0.0
        for start in range(0, len(y), trainer["batch_size"]):
            idx = order[start:start + trainer["batch_size"]]
            with torch.no_grad():
                xb, yb = policy.augment(x[idx], y[idx], None, augment_generator)
            loss = F.cross_entropy(model(xb), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(idx)
        curve.append(total / len(y))
    train_cpu = time.process_time() - start_cpu
    return {"seed": seed, "test_acc": accuracy(model, data["x_test"], data["y_test"]), "train_loss": curve,
            "cpu_s": train_cpu, "wall_s": time.perf_counter() - start_wall, "train_size": len(y)}


def final_name(final: dict) -> str:
    return "full" if final["train_size"] is None else str(final["train_size"])


def summarize(results: dict, reference: str) -> dict:
    """Per final size and arm: test accuracy mean ± 95% CI over seeds, paired difference to ``reference``."""
    out: dict = {}
    for size, arms in results.items():
        out[size] = {}
        for arm, runs in arms.items():
            entry = {"test_acc": mean_ci([r["test_acc"] for r in runs]),
                     "cpu_s": float(np.mean([r["cpu_s"] + r.get("search_cpu_s", 0.0) for r in runs]))}
            if arm != reference and reference in arms and len(runs) >= 2:
                ref = {r["seed"]: r for r in arms[reference]}
                pairs = [(r, ref[r["seed"]]) for r in runs if r["seed"] in ref]
                entry["vs_reference"] = paired_difference([a["test_acc"] for a, _ in pairs],
                                                          [b["test_acc"] for _, b in pairs])
            out[size][arm] = entry
    return out


def format_table(summary: dict, reference: str) -> str:
    """Markdown: test accuracy (%) mean ± 95% CI over seeds, the paired difference to the reference, CPU s."""

    def pct(s: dict) -> str:
        if s.get("mean") is None:
            return "-"
        ci = f" ± {100 * s['ci95']:.2f}" if s.get("ci95") is not None else ""
        return f"{100 * s['mean']:.2f}{ci}"

    lines = [f"| train images | arm | seeds | test accuracy | Δ vs {reference} (paired) | CPU s / seed |",
             "| --- | --- | --- | --- | --- | --- |"]
    for size, arms in summary.items():
        for arm, s in arms.items():
            delta = pct(s["vs_reference"]) if "vs_reference" in s else "-"
            lines.append(f"| {size} | {arm} | {s['test_acc']['n']} | {pct(s['test_acc'])} | {delta} | "
                         f"{s['cpu_s']:.0f} |")
    return "\n".join(lines)


def plot_policies(searches: dict, path: Path) -> Path | None:
    """Learned probabilities and magnitudes of every searched policy against their initialisation (the top
    sub-policies by weight), and the weight distribution (needs matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    entries = [(arm, seed, s) for arm, per_seed in searches.items() for seed, s in per_seed.items()]
    if not entries:
        return None
    fig, axes = plt.subplots(len(entries), 3, figsize=(13, 3.2 * len(entries)), squeeze=False)
    for row, (arm, seed, s) in zip(axes, entries):
        p = np.asarray(s["policy"]["probabilities"])
        m = np.asarray(s["policy"]["magnitudes"])
        w = np.asarray(s["policy"]["weights"])
        init_p, init_m = s["init"]["probability"], s["init"]["magnitude"]
        for ax, values, init, what in ((row[0], p, init_p, "application probability"),
                                       (row[1], m, init_m, "magnitude")):
            for stage, marker in ((0, "o"), (1, "x")):
                ax.scatter(np.arange(len(values)), values[:, stage], s=6, marker=marker,
                           label=f"operation {stage + 1}")
            ax.axhline(init, color="k", lw=0.8, ls="--", label="initialisation")
            ax.set_xlabel("sub-policy index")
            ax.set_ylabel(what)
            ax.set_title(f"{arm}, seed {seed}: {what}")
            ax.legend(fontsize=6)
        ax = row[2]
        top = np.argsort(-w)[:10]
        ax.barh(range(len(top)), w[top])
        ax.axvline(1.0 / len(w), color="k", lw=0.8, ls="--", label="initialisation (uniform)")
        ax.set_yticks(range(len(top)))
        ax.set_yticklabels([" + ".join(s["sub_policies"][k]) for k in top], fontsize=6)
        ax.invert_yaxis()
        ax.set_xlabel("sub-policy weight")
        ax.set_title("top 10 sub-policies")
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run_study(source, out_dir: str | Path, log: Callable[[str], None] = print, resume: bool = False,
              overwrite: bool = False, splits: tuple | None = None, plot: bool = True) -> dict:
    """Run every (seed, arm, final set) of a study config; write ``results.json``, ``summary.md`` and
    ``policies.png`` to ``out_dir``. ``resume`` keeps the finished runs of ``runs.jsonl`` (the config must
    be the one they were run with); ``overwrite`` deletes what ``out_dir`` holds first; ``splits`` is
    ``(train, test)`` :class:`~autometa.data.ArrayDataset` already in memory (default: ``config['dataset']``
    loaded); ``plot=False`` skips the figure.

    Raises:
        ResultsDirError: ``out_dir`` holds other results and neither flag is set, or resuming with a
            different config.
    """
    config = load_study_config(source)
    out, runs_path, done = open_study(out_dir, config, resume, overwrite, key=("kind", "arm", "seed", "final"))
    results = {final_name(f): {arm: [] for arm in config["arms"]} for f in config["final"]}
    searches: dict = {arm: {} for arm, spec in config["arms"].items() if spec["kind"] == "learned"}

    def record(kind, arm, seed, final, result):
        with runs_path.open("a") as f:
            f.write(json.dumps({"kind": kind, "arm": arm, "seed": seed, "final": final, "result": result}) + "\n")
        done[(kind, arm, seed, final)] = result

    for seed in config["seeds"]:
        data = None
        for arm_name, arm in config["arms"].items():
            policy = None
            for final in config["final"]:
                key = ("final", arm_name, seed, final_name(final))
                if key not in done:
                    if data is None:
                        splits = splits or (load_dataset(config["dataset"], train=True),
                                            load_dataset(config["dataset"], train=False))
                        data = prepare_seed(config, seed, splits)
                        log(f"seed {seed}: reduced set of {len(data['reduced'])} images, {len(data['y_test'])} test")
                    if policy is None:
                        if arm["kind"] == "learned":
                            search_key = ("search", arm_name, seed, None)
                            policy = build_filler("augmentation", copy.deepcopy(arm["augmentation"]))
                            if search_key in done:
                                _load_policy(policy, done[search_key]["policy"])
                            else:
                                policy, summary = search_policy(config, arm, data, seed, log)
                                record("search", arm_name, seed, None, summary)
                            policy.requires_grad_(False)
                        else:
                            policy = build_filler("augmentation", copy.deepcopy(arm.get("augmentation", "none")))
                    result = train_final(config, policy, data, final, seed)
                    record(*key, result)
                    log(f"  {arm_name:>16} on {final_name(final):>5}: test {100 * result['test_acc']:.2f}  "
                        f"({result['cpu_s']:.0f} CPU s)")
                run = dict(done[key])
                if arm["kind"] == "learned":
                    run["search_cpu_s"] = done[("search", arm_name, seed, None)]["cpu_s"]
                results[final_name(final)][arm_name].append(run)
        for arm_name in searches:
            searches[arm_name][seed] = done[("search", arm_name, seed, None)]
    summary = summarize(results, config["reference"])
    (out / "results.json").write_text(json.dumps({"config": config, "summary": summary, "results": results,
                                                  "searches": searches}))
    render_study(out, plot=plot)
    log(format_table(summary, config["reference"]))
    return {"config": config, "results": results, "summary": summary, "searches": searches}


def render_study(out_dir, plot: bool = True) -> Path:
    """Write ``summary.md``, ``report.md`` and ``policies.png`` from ``out_dir/results.json``."""
    out = Path(out_dir)
    data = json.loads((out / "results.json").read_text())
    config, searches = data["config"], data["searches"]
    table = format_table(summarize(data["results"], config["reference"]), config["reference"])
    (out / "summary.md").write_text(table + "\n")
    lines = ["# autometa augmentation study", ""]
    if config.get("description"):
        lines += [config["description"].strip(), ""]
    lines += [table, ""]
    if plot and plot_policies(searches, out / "policies.png") is not None:
        lines += ["![learned policies against their initialisation](policies.png)", ""]
    (out / "report.md").write_text("\n".join(lines))
    return out / "report.md"


def _load_policy(policy: DADA, learned: dict) -> None:
    """Set a DADA policy's ω from its natural units (``policy()``'s weights, probabilities, magnitudes)."""
    with torch.no_grad():
        policy.policy_logits.copy_(torch.log(torch.tensor(learned["weights"])))
        for name, key in (("probability_logits", "probabilities"), ("magnitude_logits", "magnitudes")):
            value = torch.tensor(learned[key]).clamp(1e-12, 1 - 1e-12)
            getattr(policy, name).copy_(torch.log(value) - torch.log1p(-value))
