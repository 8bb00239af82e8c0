"""The run loop: config -> objects -> meta-train -> validate -> test -> results directory.

Reads top to bottom like a training script. A results directory holds ``config.yaml`` (the
resolved config), ``versions.json``, ``metrics.jsonl`` (one JSON object per logged step),
``results.json`` and ``checkpoints/{last,best}.pt``. Resuming from ``last.pt`` restores the
weights, the outer optimizer, the task sampler's random stream and the metrics log, so a
resumed run reaches the same numbers as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

import autometa
from autometa.errors import AutometaError, CheckpointError, ConfigError
from autometa.experiment._config import DEFAULTS, RESUMABLE_CHANGES, config_diff, deep_merge, load_config
from autometa.experiment._stats import format_ci, mean_ci
from autometa.learners import LEARNERS, Learner, build_learner
from autometa.nets import build_net
from autometa.tasks import TaskDistribution, make_tasks


@dataclass
class Experiment:
    """The objects a config describes."""

    config: dict
    learner: Learner
    train: TaskDistribution
    val: TaskDistribution | None
    test: TaskDistribution

    @property
    def selection_metric(self) -> tuple[str, str]:
        """(metric, "max"|"min") used to pick the best checkpoint."""
        return ("accuracy", "max") if self.train.kind == "classification" else ("loss", "min")


def versions() -> dict:
    return {"autometa": autometa.__version__, "python": sys.version.split()[0], "torch": torch.__version__,
            "numpy": np.__version__, "platform": platform.platform(), "processor": platform.processor()}


def build_experiment(config: dict) -> Experiment:
    """Build tasks, network and learner, reporting every construction problem in one error."""
    problems, splits = [], {}
    need = ["train", "test"] + (["val"] if config["run"]["validate_every"] else [])
    for split in need:
        try:
            splits[split] = make_tasks(config["tasks"], split)
        except AutometaError as exc:
            problems.append(f"tasks ({split}): {exc}")
    learner = None
    name = str(config["learner"].get("name", "")).lower()
    if name not in LEARNERS:
        problems.append(f"learner.name {name!r} is unknown; choose one of {sorted(LEARNERS)}")
    elif "train" in splits:
        cls = LEARNERS[name]
        train, test = splits["train"], splits.get("test")
        head = getattr(cls, "HEAD", True)
        if head and test is not None and train.num_outputs != test.num_outputs:
            problems.append(f"learner {name!r} trains a {train.num_outputs}-output head but test tasks have "
                            f"{test.num_outputs} ways; set tasks.train_ways equal to tasks.ways")
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(config["seed"])
                if "architecture" in config["model"]:  # a filler of the architecture slot as the network
                    from autometa.slots import build_filler

                    if set(config["model"]) != {"architecture"}:
                        raise ConfigError(f"model.architecture names the whole network; drop the other model keys "
                                          f"{sorted(set(config['model']) - {'architecture'})}.")
                    model = build_filler("architecture", config["model"]["architecture"]).derived_network(
                        train.input_shape, train.num_outputs if head else None, seed=config["seed"])
                else:
                    model = build_net(config["model"], train.input_shape, train.num_outputs if head else None)
                spec = dict(config["learner"])
                if getattr(cls, "NEEDS_NUM_CLASSES", False) and train.kind == "classification":
                    spec["num_classes"] = train.num_classes
                learner = build_learner(spec, model, train.kind)
        except AutometaError as exc:
            problems.append(f"model/learner: {exc}")
    if problems:
        raise ConfigError("Invalid config:\n  - " + "\n  - ".join(problems))
    return Experiment(config, learner, splits["train"], splits.get("val"), splits["test"])


def evaluate(learner: Learner, tasks: TaskDistribution, count: int, batch_size: int, seed: int,
             device: str = "cpu", progress: bool = False, desc: str = "eval") -> dict:
    """Per-task query metrics of ``count`` tasks drawn from ``seed``, as mean ± 95% CI.

    Returns ``{metric: {"mean", "ci95", "std", "n"}}`` plus ``"values": {metric: [...]}`` with the
    per-task numbers (used for paired comparisons) and ``"digest"``, a hash of the tasks' data
    that shows two evaluations saw identical tasks.
    """
    from tqdm.auto import tqdm

    values: dict[str, list] = {}
    digest = hashlib.sha1()
    bar = tqdm(total=count, desc=desc, leave=False, disable=not progress)
    for batch in tasks.episodes(count, batch_size, seed):
        for tensor in batch.tensors:
            digest.update(tensor.numpy().tobytes())
        for k, v in learner.evaluate(batch.to(device)).items():
            values.setdefault(k, []).extend(v.cpu().tolist())
        bar.update(len(batch))
    bar.close()
    return {**{k: mean_ci(v) for k, v in values.items()}, "values": values, "digest": digest.hexdigest()}


def count_flops(learner: Learner, fn, batch):
    """``(fn(batch), floating-point operations it performed)`` by ``torch.utils.flop_counter``.

    The counter sees only the calling thread, so a learner that would split tasks over threads
    runs this one call as the equivalent loop.
    """
    from torch.utils.flop_counter import FlopCounterMode

    mode = learner.batching
    if learner._mode(batch) == "threads":
        learner.batching = "loop"
    try:
        with FlopCounterMode(display=False) as counter:
            result = fn(batch)
    finally:
        learner.batching = mode
    return result, int(counter.get_total_flops())


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _save_checkpoint(path: Path, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # never leaves a half-written checkpoint


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Load a checkpoint with ``weights_only=True``; a damaged file raises :class:`CheckpointError`."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise CheckpointError(f"No checkpoint at {path}. Run without --resume to start a new run.") from exc
    except Exception as exc:  # pickle / zip errors come in many types
        raise CheckpointError(
            f"Checkpoint {path} is damaged or not an autometa checkpoint ({type(exc).__name__}: {exc}). "
            f"Delete it to restart from scratch, or resume from checkpoints/best.pt by copying it over."
        ) from exc


def evaluate_run(run_dir: str | os.PathLike, overrides: list[str] | None = None, checkpoint: str = "best.pt",
                 split: str = "test") -> dict:
    """Evaluate a finished run's checkpoint, possibly on other tasks (e.g. ``tasks.ways=20``).

    The run's own ``config.yaml`` is read, ``overrides`` are applied (typically to ``tasks`` or
    ``run.test_tasks``), and the checkpoint's learner is evaluated on ``split`` with the run's
    test seed. Nothing in ``run_dir`` is changed.

    Returns:
        ``{metric: {"mean", "ci95", "std", "n"}}`` plus ``"config"`` (the overrides applied) and
        ``"checkpoint"``.

    Raises:
        CheckpointError: a missing or damaged checkpoint, or one that does not fit the learner
            the (overridden) config builds.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise CheckpointError(f"{run_dir} holds no config.yaml; pass a directory written by `autometa run`.")
    config = load_config(yaml.safe_load((run_dir / "config.yaml").read_text()), overrides)
    config["run"]["validate_every"] = 0
    exp = build_experiment(config)
    state = load_checkpoint(run_dir / "checkpoints" / checkpoint)
    try:
        exp.learner.load_state_dict(state["learner"])
    except RuntimeError as exc:
        raise CheckpointError(f"{run_dir / 'checkpoints' / checkpoint} does not fit the learner of the overridden "
                              f"config ({exc}). Override only what the weights do not depend on, such as the "
                              f"ways of a metric learner.") from exc
    tasks = exp.test if split == "test" else make_tasks(config["tasks"], split)
    run = config["run"]
    result = evaluate(exp.learner, tasks, run["test_tasks"], run["eval_batch"], run["test_seed"], run["device"],
                      progress=run["progress"], desc=split)
    return {**{k: v for k, v in result.items() if k not in ("values", "digest")},
            "overrides": list(overrides or []), "checkpoint": str(run_dir / "checkpoints" / checkpoint)}


def run_experiment(config: dict | str, out_dir: str | os.PathLike | None = None, callback=None,
                   resume: bool = False, overrides: list[str] | None = None) -> dict:
    """Meta-train, validate and test the learner a config describes.

    Args:
        config: a config dict or YAML path (validated; defaults filled in).
        out_dir: results directory; None keeps nothing on disk.
        callback: ``callback(step, metrics) -> bool`` after each validation; returning True
            stops training early (pruning). Metrics hold ``val_<metric>`` entries.
        resume: continue from ``out_dir/checkpoints/last.pt``.
        overrides: ``key=value`` strings applied on top of ``config``.

    Returns:
        The content of ``results.json``: ``test`` metrics as mean, 95% CI half-width and n,
        ``best_val``, ``steps``, ``meta_train_time_s``, ``wall_time_s``.

    Raises:
        ConfigError: an invalid config, or an ``out_dir`` that already holds a run while
            ``resume`` is False.
        CheckpointError: ``resume`` with a missing, damaged or mismatching checkpoint.
    """
    from autometa.experiment._architecture import is_architecture_config, run_architecture

    if is_architecture_config(config):  # `kind: architecture`: search/retrain/test, not meta-training
        return run_architecture(config, out_dir, resume=resume, overrides=overrides)
    wall_start = time.perf_counter()
    config = load_config(config, overrides)
    run, outer = config["run"], config["outer"]
    out = Path(out_dir) if out_dir is not None else None
    ckpt_dir = out / "checkpoints" if out else None
    if out is not None:
        if not resume and (out / "metrics.jsonl").exists():
            raise ConfigError(f"{out} already holds a run. Pass --resume to continue it, or choose another --out.")
        if resume:
            saved = yaml.safe_load((out / "config.yaml").read_text()) if (out / "config.yaml").exists() else None
            if saved is None:
                raise CheckpointError(f"{out} holds no config.yaml to resume from. Start a new run instead.")
            # defaults added since the run started are not differences
            changed = [k for k in config_diff(deep_merge(DEFAULTS, saved), config) if k not in RESUMABLE_CHANGES]
            if changed:
                raise CheckpointError(f"Cannot resume {out}: the config differs in {changed}. "
                                      f"Resume with the same config, or start a new run in another directory.")
    exp = build_experiment(config)
    if run["threads"]:
        torch.set_num_threads(int(run["threads"]))
    device = run["device"]
    learner = exp.learner.to(device)
    trainable = [p for p in learner.parameters() if p.requires_grad]
    total_steps = outer["steps"] if trainable else 0  # a rule with nothing to learn is only tested
    optimizer = scheduler = None
    if trainable:
        opt_cls = torch.optim.Adam if outer["optimizer"] == "adam" else torch.optim.SGD
        optimizer = opt_cls(trainable, lr=outer["lr"], weight_decay=outer["weight_decay"])
        decay_every = outer["lr_decay_every"] or 10**12
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, decay_every, gamma=outer["lr_decay"])
    generator = torch.Generator().manual_seed(config["seed"])
    metric, mode = exp.selection_metric
    better = (lambda a, b: a > b) if mode == "max" else (lambda a, b: a < b)
    start, best, elapsed, cpu_elapsed = 0, None, 0.0, 0.0

    if resume:  # read the checkpoint before writing anything, so a damaged one loses nothing
        state = load_checkpoint(ckpt_dir / "last.pt")
        learner.load_state_dict(state["learner"])
        if optimizer is not None:
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
        generator.set_state(state["generator"])
        start, best, elapsed = state["step"], state["best"], state["elapsed"]
        cpu_elapsed = state.get("cpu_elapsed", 0.0)
        lines = (out / "metrics.jsonl").read_text().splitlines() if (out / "metrics.jsonl").exists() else []
        kept = [ln for ln in lines if ln.strip() and json.loads(ln)["step"] <= start]
        _atomic_write(out / "metrics.jsonl", "".join(ln + "\n" for ln in kept))
    if out is not None:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        _atomic_write(out / "config.yaml", yaml.safe_dump(config, sort_keys=False))
        _atomic_write(out / "versions.json", json.dumps(versions(), indent=2))
    log = open(out / "metrics.jsonl", "a") if out else None

    def record(entry: dict) -> None:
        if log:
            log.write(json.dumps(entry) + "\n")
            log.flush()

    def checkpoint(name: str, step: int) -> None:
        if ckpt_dir is None:
            return
        _save_checkpoint(ckpt_dir / name, {
            "learner": learner.state_dict(), "optimizer": optimizer.state_dict() if optimizer else {},
            "scheduler": scheduler.state_dict() if scheduler else {}, "generator": generator.get_state(),
            "step": step, "best": best, "elapsed": elapsed, "cpu_elapsed": cpu_elapsed,
            "train_digest": train_digest,
        })

    from tqdm.auto import tqdm

    flops = {"meta_step": None, "per_test_task": None}
    bar = tqdm(total=total_steps, initial=start, desc="meta-train", disable=not run["progress"], dynamic_ncols=True)
    stopped_early, out_of_time, step = False, False, start
    train_digest = state.get("train_digest", "") if resume else ""
    t_last, cpu_last = time.perf_counter(), time.process_time()
    for step in range(start + 1, total_steps + 1):
        batch = exp.train.sample(outer["meta_batch"], generator)
        chained = hashlib.sha1(train_digest.encode())  # a chain, so that a resumed run ends the same
        for tensor in batch.tensors:
            chained.update(tensor.numpy().tobytes())
        train_digest = chained.hexdigest()
        batch = batch.to(device)
        optimizer.zero_grad(set_to_none=True)
        if run["count_flops"] and flops["meta_step"] is None:
            train_metrics, flops["meta_step"] = count_flops(learner, learner.meta_backward, batch)
        else:
            train_metrics = learner.meta_backward(batch)
        if outer["clip_grad"]:
            torch.nn.utils.clip_grad_norm_(learner.parameters(), outer["clip_grad"])
        optimizer.step()
        scheduler.step()
        now, cpu_now = time.perf_counter(), time.process_time()
        elapsed, cpu_elapsed = elapsed + now - t_last, cpu_elapsed + cpu_now - cpu_last
        t_last, cpu_last = now, cpu_now
        bar.update(1)
        out_of_time = ((bool(run["time_budget_s"]) and elapsed >= run["time_budget_s"])
                       or (bool(run["cpu_budget_s"]) and cpu_elapsed >= run["cpu_budget_s"]))
        last = step == total_steps or out_of_time
        if step % run["log_every"] == 0 or last:
            record({"step": step, "time_s": round(elapsed, 3), "cpu_time_s": round(cpu_elapsed, 3),
                    **{f"train_{k}": v for k, v in train_metrics.items()}})
            bar.set_postfix({k: f"{v:.3f}" for k, v in train_metrics.items()}, refresh=False)
        if exp.val is not None and (step % run["validate_every"] == 0 or last):
            val = evaluate(learner, exp.val, run["val_tasks"], run["eval_batch"], run["val_seed"], device)
            entry = {"step": step, "time_s": round(elapsed, 3), "cpu_time_s": round(cpu_elapsed, 3),
                     **{f"val_{k}": v["mean"] for k, v in val.items() if k not in ("values", "digest")}}
            record(entry)
            if best is None or better(entry[f"val_{metric}"], best["value"]):
                best = {"step": step, "value": entry[f"val_{metric}"], "metric": metric}
                checkpoint("best.pt", step)
            t_last, cpu_last = time.perf_counter(), time.process_time()  # validation is not meta-training
            if callback is not None and callback(step, entry):
                stopped_early = True
        if ckpt_dir is not None and ((run["checkpoint_every"] and step % run["checkpoint_every"] == 0)
                                     or last or stopped_early):
            checkpoint("last.pt", step)
        if stopped_early or out_of_time:
            break
    bar.close()
    if log:
        log.close()

    if best is not None and ckpt_dir is not None and (ckpt_dir / "best.pt").exists():
        learner.load_state_dict(load_checkpoint(ckpt_dir / "best.pt")["learner"])
    t0 = time.perf_counter()
    test = evaluate(learner, exp.test, run["test_tasks"], run["eval_batch"], run["test_seed"], device,
                    progress=run["progress"], desc="test")
    test_time = time.perf_counter() - t0
    if run["count_flops"]:
        one = next(exp.test.episodes(1, 1, run["test_seed"])).to(device)
        flops["per_test_task"] = count_flops(learner, learner.evaluate, one)[1]
    results = {
        "test": {k: v for k, v in test.items() if k not in ("values", "digest")},
        "best_val": best,
        "steps": step,
        "meta_batch": outer["meta_batch"],
        "stopped_early": stopped_early,
        "out_of_time": out_of_time,
        "meta_train_time_s": round(elapsed, 3),
        "meta_train_cpu_time_s": round(cpu_elapsed, 3),
        "test_time_s": round(test_time, 3),
        "wall_time_s": round(time.perf_counter() - wall_start, 3),
        "adaptation_time_per_task_s": round(test_time / max(run["test_tasks"], 1), 6),
        "flops": flops,
        "test_tasks_digest": test["digest"],
        "train_tasks_digest": train_digest,
        "device": str(device),
        "threads": torch.get_num_threads(),
    }
    if out is not None:
        _atomic_write(out / "results.json", json.dumps(results, indent=2))
        _atomic_write(out / "test_values.json", json.dumps(test["values"]))
    if run["progress"]:
        shown = {k: format_ci(v, 100 if k == "accuracy" else 1, 2 if k == "accuracy" else 4)
                 for k, v in results["test"].items()}
        print(f"test ({results['test'][next(iter(results['test']))]['n']} tasks): "
              + ", ".join(f"{k} {v}" for k, v in shown.items()), file=sys.stderr)
    return results
