"""The run loop: config -> objects -> meta-train -> validate -> test -> results directory.

Reads top to bottom like a training script. A results directory holds ``config.yaml`` (the
resolved config), ``versions.json``, ``metrics.jsonl`` (one JSON object per logged step),
``results.json`` and ``checkpoints/{last,best}.pt``. Resuming from ``last.pt`` restores the
weights, the outer optimizer, the task sampler's random stream and the metrics log, so a
resumed run reaches the same numbers as an uninterrupted one.

What the loop guarantees:

- a results directory is claimed as a ``run`` (``autometa.json``) and nothing in it is
  overwritten unless ``resume`` (continue it) or ``overwrite`` (delete it first) is asked;
- a resumed run keeps its own saved config; only ``RESUMABLE_CHANGES`` (``outer.steps``,
  budgets, threads, ...) may change, and only by explicit overrides;
- a NaN or inf training loss or meta-gradient stops the run at that step, before the
  optimizer step, with a :class:`~autometa.errors.NumericalError` whose ``step`` attribute
  names it: no NaN reaches the weights or a checkpoint, and no ``results.json`` is written.
"""

from __future__ import annotations

import hashlib
import json
import math
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
from autometa.errors import (
    AutometaError,
    CheckpointError,
    ConfigError,
    DataIntegrityError,
    DataNotFoundError,
    NumericalError,
)
from autometa.experiment._config import (
    DEFAULTS,
    RESUMABLE_CHANGES,
    config_diff,
    config_problems,
    deep_merge,
    get_path,
    invalid_config,
    load_config,
    load_yaml,
    parse_overrides,
)
from autometa.experiment._distributed import distributed_meta_backward, init_distributed, process_rank
from autometa.experiment._outdir import claim_out_dir, out_dir_kind
from autometa.experiment._stats import format_ci, mean_ci
from autometa.learners import LEARNERS, Learner, build_learner
from autometa.nets import build_net, check_model_spec
from autometa.tasks import TaskDistribution, check_tasks_spec, make_tasks


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


def _check_model(spec) -> dict:
    """A ``model`` section: a network's (``check_model_spec``) or ``{architecture: <filler>}``, a filler of
    the architecture slot (a searched, random or hand-crafted cell network; checked by building the filler)."""
    if isinstance(spec, dict) and "architecture" in spec:
        from autometa.slots import build_filler

        check_model_spec(spec)  # the other keys
        build_filler("architecture", spec["architecture"])
        return spec
    return check_model_spec(spec)


def _build_model(spec: dict, in_shape, out_features, seed: int):
    """The network of a ``model`` section (see :func:`_check_model`); an architecture filler's derived
    network is initialised under the run's seed."""
    if "architecture" in spec:
        from autometa.slots import build_filler

        return build_filler("architecture", spec["architecture"]).derived_network(in_shape, out_features, seed=seed)
    return build_net(spec, in_shape, out_features)


def _usable_spec(spec, check, problems: list[str], needs_name: bool) -> dict | None:
    """``spec`` less the keys ``check`` refuses (each refusal added to ``problems``), so that the
    sections after it can still be checked; None when it names no known component."""
    if not isinstance(spec, dict) or (needs_name and "name" not in spec):
        return None  # validation already names the problem
    try:
        check(spec)
        return spec
    except ConfigError as exc:
        if str(exc) not in problems:
            problems.append(str(exc))
    named = {"name": spec["name"]} if "name" in spec else {}
    try:
        check(named)
    except ConfigError:
        return None
    kept = {}
    for key, value in spec.items():
        try:
            check({**named, key: value})
            kept[key] = value
        except ConfigError:
            pass
    return kept


def build_experiment(config: dict, source: str | None = None, problems: list[str] | None = None) -> Experiment:
    """Build tasks, network and learner, reporting every problem in one error.

    Args:
        config: a config with defaults filled in (:func:`load_config`).
        source: the file the config came from, named in the error.
        problems: problems already found (:func:`config_problems`), reported with those of
            construction; sections are still built as far as they can be, so that one error
            lists a typo in ``tasks`` together with a bad value in ``learner``.

    Raises:
        ConfigError: every problem found, naming ``source``.
    """
    problems, splits = list(problems or []), {}
    run = config["run"] if isinstance(config.get("run"), dict) else {}
    tasks_spec = _usable_spec(config.get("tasks"), check_tasks_spec, problems, True)  # once, not per split
    model_spec = _usable_spec(config.get("model"), _check_model, problems, False)
    need = ["train", "test"] + (["val"] if run.get("validate_every") else []) if tasks_spec else []
    for split in need:
        try:
            splits[split] = make_tasks(tasks_spec, split)
        except (DataIntegrityError, DataNotFoundError):
            raise  # a problem of the data files, not of the config: said once, as itself
        except AutometaError as exc:
            problems.append(f"tasks ({split}): {exc}")
    if any(not isinstance(config.get(k), dict) for k in ("learner", "run", "outer")) or \
            not isinstance(config.get("seed"), int):
        raise invalid_config(problems, source)  # validation named these; nothing more can be built
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
                model = None
                if model_spec is not None:
                    model = _build_model(model_spec, train.input_shape, train.num_outputs if head else None,
                                         config["seed"])
                spec = dict(config["learner"])
                if getattr(cls, "NEEDS_NUM_CLASSES", False) and train.kind == "classification":
                    spec["num_classes"] = train.num_classes
                if model is None:  # the model section's problem is reported; check the learner on a stand-in
                    model = build_net({}, train.input_shape, train.num_outputs if head else None)
                learner = build_learner(spec, model, train.kind)
        except AutometaError as exc:
            if str(exc) not in problems:
                problems.append(f"model/learner: {exc}")
    if problems:
        raise invalid_config(problems, source)
    return Experiment(config, learner, splits["train"], splits.get("val"), splits["test"])


def _device_tasks(tasks: TaskDistribution, device) -> TaskDistribution:
    """``tasks`` with its images on ``device`` (``run.device_tasks``)."""
    if not callable(getattr(tasks, "to", None)):
        raise ConfigError(f"run.device_tasks keeps the images of few-shot image tasks (omniglot, mnist, ...) on the "
                          f"device; {type(tasks).__name__} tasks are made on the CPU. Set run.device_tasks=false.")
    return tasks.to(device)


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


CHECKPOINT_KEYS = ("learner", "optimizer", "scheduler", "generator", "step", "best", "elapsed")


def load_checkpoint(path: str | os.PathLike, required: tuple[str, ...] = ("learner",)) -> dict:
    """Load a checkpoint with ``weights_only=True``.

    Raises:
        CheckpointError: a missing, truncated or damaged file, a file that is not an autometa
            checkpoint (names the missing ``required`` keys), each with what to do instead.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise CheckpointError(f"No checkpoint at {path}: the run stopped before writing it. Start the run again "
                              f"(--overwrite, or another --out), or pick a checkpoint that exists.") from exc
    except Exception as exc:  # pickle / zip errors come in many types
        raise CheckpointError(
            f"Checkpoint {path} is damaged or not an autometa checkpoint ({type(exc).__name__}: {exc}). "
            f"Delete it to restart from scratch, or resume from checkpoints/best.pt by copying it over."
        ) from exc
    missing = [k for k in required if not isinstance(state, dict) or k not in state]
    if missing:
        got = sorted(state)[:10] if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{path} is a torch file but not an autometa checkpoint: it lacks the key(s) {missing} "
                              f"(it holds {got}). Pass a checkpoint written by `autometa run` (checkpoints/last.pt "
                              f"or best.pt).")
    return state


def _load_weights(module: torch.nn.Module, weights, path, what: str) -> None:
    """``module.load_state_dict(weights)``, a mismatch being a :class:`CheckpointError`."""
    try:
        module.load_state_dict(weights)
    except (RuntimeError, KeyError, ValueError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{path} does not fit {what} ({type(exc).__name__}: {str(exc)[:400]}). It was written "
                              f"for another model or learner; pass the checkpoint of this run, or a config that "
                              f"builds the model the checkpoint holds.") from exc


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
    config = load_config(_read_saved_config(run_dir), overrides)
    config["run"]["validate_every"] = 0
    exp = build_experiment(config, str(run_dir / "config.yaml"))
    path = run_dir / "checkpoints" / checkpoint
    state = load_checkpoint(path)
    _load_weights(exp.learner, state["learner"], path, "the learner of the overridden config; override only "
                  "what the weights do not depend on, such as the ways of a metric learner")
    tasks = exp.test if split == "test" else make_tasks(config["tasks"], split)
    run = config["run"]
    result = evaluate(exp.learner, tasks, run["test_tasks"], run["eval_batch"], run["test_seed"], run["device"],
                      progress=run["progress"], desc=split)
    _check_finite_eval(result, split, None, config)
    return {**{k: v for k, v in result.items() if k not in ("values", "digest")},
            "overrides": list(overrides or []), "checkpoint": str(path)}


def _read_saved_config(run_dir: Path) -> dict:
    """The resolved config a run saved, with defaults added since it was written."""
    path = run_dir / "config.yaml"
    try:
        saved = load_yaml(path.read_text())
    except Exception as exc:  # yaml errors, decoding errors
        raise CheckpointError(f"{path} could not be read ({type(exc).__name__}: {exc}). Restore it from the "
                              f"config the run was started with, or start a new run.") from exc
    if not isinstance(saved, dict):
        raise CheckpointError(f"{path} does not hold a config mapping. Got {type(saved).__name__}; restore it "
                              f"or start a new run.")
    return deep_merge(DEFAULTS, saved)


def _flatten(mapping: dict, prefix: str = "") -> list[str]:
    out = []
    for key, value in mapping.items():
        out += _flatten(value, f"{prefix}{key}.") if isinstance(value, dict) and value else [f"{prefix}{key}"]
    return out


def _resume_config(out: Path, source, overrides) -> tuple[dict, list[str]]:
    """The config a resumed run continues with, and the resumable keys that change.

    The run's own ``config.yaml`` is the base; overrides may change only the keys in
    ``RESUMABLE_CHANGES``. ``source`` (the config the user passed, if any) with the overrides
    must describe the same run: repeating the command that started it is accepted, a value
    that differs in any other key is refused with the key's name. Resumable keys are taken from
    the overrides only, never from ``source``, so a run started with ``--set outer.steps=30``
    and resumed without it still ends at step 30.
    """
    saved = _read_saved_config(out)
    changes = overrides if isinstance(overrides, dict) else parse_overrides(overrides or [])
    base = saved if source is None else deep_merge(DEFAULTS, source if isinstance(source, dict)
                                                   else load_config(source, check=False))
    refused = [k for k in config_diff(saved, deep_merge(base, changes)) if k not in RESUMABLE_CHANGES]
    if refused:
        raise CheckpointError(
            f"Cannot resume {out}: the requested config differs from the run's own in {refused}, which a resumed "
            f"run cannot change (only {sorted(RESUMABLE_CHANGES)} can, with --set). Resume with "
            f"`autometa run --resume --out {out}` (the run's own config), or start a new run in another directory.")
    config = load_config(saved, changes)
    return config, config_diff(saved, config)


def _precheck_out(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse an unusable results directory before anything is built; deletes nothing."""
    if resume and overwrite:
        raise ConfigError("--resume continues the run in --out and --overwrite deletes it; pass one of them.")
    if out.exists() and not out.is_dir():
        claim_out_dir(out, "run")  # raises: a file is not a results directory
    if resume and not (out / "config.yaml").is_file():
        kind = out_dir_kind(out) if out.is_dir() else None
        if kind not in (None, "run"):
            claim_out_dir(out, "run", resume=True)  # raises: another command's directory
        raise CheckpointError(f"--out {str(out)!r} holds no run to resume (no config.yaml). Start a new run "
                              f"without --resume, or pass the directory of an earlier `autometa run`.")
    if not out.exists():
        return
    if overwrite and out.is_dir() and out_dir_kind(out) in (None, "run"):
        return  # deleted by claim_out_dir once the config is known to be good
    claim_out_dir(out, "run", resume=resume)  # raises, or marks an empty or resumable run directory


def _diverged(step: int, total: int, what: str, metrics: dict, config: dict, ckpt_dir: Path | None,
              good_step: int | None) -> NumericalError:
    """The error that stops a run whose loss or meta-gradient is NaN or inf."""
    learner, outer = config["learner"], config["outer"]
    rates = [f"outer.lr={outer['lr']} ({outer['optimizer']})"]
    if "inner_lr" in learner:
        rates.insert(0, f"learner.inner_lr={learner['inner_lr']}")
    shown = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items())
    kept = (f"The last good checkpoint ({ckpt_dir / 'last.pt'}, step {good_step}) is kept"
            if ckpt_dir is not None and good_step else "No checkpoint was written")
    clip = "" if outer["clip_grad"] else ", or set outer.clip_grad (e.g. 1.0) to bound the meta-gradient"
    error = NumericalError(
        f"Training diverged at step {step} of {total}: {what} ({shown}). Likely cause: a learning rate too large "
        f"for this model ({', '.join(rates)}). Lower outer.lr or learner.inner_lr{clip}. {kept}; no results "
        f"were written.")
    error.step, error.loss = step, metrics.get("loss")
    return error


def _check_finite_eval(result: dict, split: str, step: int | None, config: dict) -> None:
    """Raise :class:`NumericalError` if an evaluation's mean metrics are NaN or inf."""
    bad = {k: v["mean"] for k, v in result.items() if isinstance(v, dict) and "mean" in v
           and not math.isfinite(v["mean"])}
    if bad:
        where = f" at step {step}" if step is not None else ""
        inner = config["learner"].get("inner_lr")
        error = NumericalError(
            f"Evaluation on {split} tasks{where} gave non-finite {bad}: adaptation to new tasks diverges. Likely "
            f"cause: learner.inner_lr={inner} or learner.eval_inner_steps too large for these weights; lower them. "
            f"No results were written.")
        error.step, error.loss = step, bad.get("loss")
        raise error


def run_experiment(config: dict | str | None, out_dir: str | os.PathLike | None = None, callback=None,
                   resume: bool = False, overrides: list[str] | dict | None = None, overwrite: bool = False) -> dict:
    """Meta-train, validate and test the learner a config describes.

    Args:
        config: a config dict or YAML path (validated; defaults filled in). With ``resume`` it
            may be None: the run's own ``config.yaml`` is used.
        out_dir: results directory; None keeps nothing on disk.
        callback: ``callback(step, metrics) -> bool`` after each validation; returning True
            stops training early (pruning). Metrics hold ``val_<metric>`` entries.
        resume: continue from ``out_dir/checkpoints/last.pt`` with the run's own saved config;
            ``overrides`` may change only the keys in ``RESUMABLE_CHANGES`` (e.g. ``outer.steps``).
        overrides: ``key=value`` strings applied on top of ``config``.
        overwrite: delete the results already in ``out_dir`` first (a run directory only).

    Returns:
        The content of ``results.json``: ``test`` metrics as mean, 95% CI half-width and n,
        ``best_val``, ``steps``, ``meta_train_time_s``, ``wall_time_s``.

    Raises:
        ConfigError: an invalid config (every problem at once, naming the file).
        ResultsDirError: ``out_dir`` is a file, another command's directory, or holds results
            while neither ``resume`` nor ``overwrite`` is set.
        CheckpointError: ``resume`` with a missing, damaged or mismatching checkpoint, or with
            overrides of keys a resumed run cannot change.
        NumericalError: the training loss or meta-gradient became NaN or inf (``.step`` names
            the step); the last good checkpoint is kept and no results are written.
    """
    from autometa.experiment._architecture import is_architecture_config, run_architecture

    if config is not None and is_architecture_config(config):  # `kind: architecture`: search/retrain/test
        return run_architecture(config, out_dir, resume=resume, overrides=overrides, overwrite=overwrite)
    wall_start = time.perf_counter()
    out = Path(out_dir) if out_dir is not None else None
    if resume and out is None:
        raise ConfigError("resume=True needs the out_dir of the run to continue.")
    writer = process_rank() == 0  # under torchrun only rank 0 writes the results directory
    if out is not None and writer:
        _precheck_out(out, resume, overwrite)
    changed: list[str] = []
    if resume:
        config, changed = _resume_config(out, config, overrides)
        source = str(out / "config.yaml")
    else:
        if config is None:
            raise ConfigError("Pass a config (a YAML file or a dict), e.g. experiments/sinusoid_maml_k10.yaml.")
        source = None if isinstance(config, dict) else str(config)
        config = load_config(config, overrides, check=False)
    problems = config_problems(config)
    exp = build_experiment(config, source, problems)  # every problem of the config in one error
    run, outer = config["run"], config["outer"]
    ckpt_dir = out / "checkpoints" if out else None
    if run["threads"]:
        torch.set_num_threads(int(run["threads"]))
    device, world = run["device"], 1
    if run["distributed"]:  # data-parallel over the tasks of each meta-batch (torchrun)
        _, world, device = init_distributed(device)
    learner = exp.learner.to(device)
    learner.memory_budget, learner.precision_policy = run["memory_budget"], run["precision"]
    train_tasks = _device_tasks(exp.train, device) if run["device_tasks"] else exp.train
    trainable = [p for p in learner.parameters() if p.requires_grad]
    total_steps = outer["steps"] if trainable else 0  # a rule with nothing to learn is only tested
    optimizer = scheduler = None
    if trainable:
        opt_cls = torch.optim.Adam if outer["optimizer"] == "adam" else torch.optim.SGD
        optimizer = opt_cls(trainable, lr=outer["lr"], weight_decay=outer["weight_decay"])
        decay_every = outer["lr_decay_every"] or 10**12
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, decay_every, gamma=outer["lr_decay"])
    # device tasks: indices drawn on the device too (seeded; another stream than the CPU's)
    generator = torch.Generator(device=device if run["device_tasks"] else "cpu").manual_seed(config["seed"])
    metric, mode = exp.selection_metric
    better = (lambda a, b: a > b) if mode == "max" else (lambda a, b: a < b)
    start, best, elapsed, cpu_elapsed, state = 0, None, 0.0, 0.0, {}

    if resume:  # read the checkpoint before writing anything, so a damaged one loses nothing
        path = ckpt_dir / "last.pt"
        state = load_checkpoint(path, CHECKPOINT_KEYS)
        _load_weights(learner, state["learner"], path, "the learner of this run's config")
        try:
            if optimizer is not None:
                optimizer.load_state_dict(state["optimizer"])
                scheduler.load_state_dict(state["scheduler"])
            generator.set_state(state["generator"])
        except (RuntimeError, KeyError, ValueError, TypeError) as exc:
            raise CheckpointError(f"{path} holds an outer-optimizer or sampler state that does not fit this run "
                                  f"({type(exc).__name__}: {exc}). Pass the checkpoint of this run.") from exc
        start, best, elapsed = state["step"], state["best"], state["elapsed"]
        cpu_elapsed = state.get("cpu_elapsed", 0.0)
        what = ", ".join(f"{k}={get_path(config, k)}" for k in changed)  # said even without progress bars
        print(f"resuming {out} at step {start} of {total_steps}" + (f" (changed: {what})" if what else ""),
              file=sys.stderr)
    if out is not None and writer:
        claim_out_dir(out, "run", resume=resume, overwrite=overwrite)
        if resume:
            lines = (out / "metrics.jsonl").read_text().splitlines() if (out / "metrics.jsonl").exists() else []
            kept = [ln for ln in lines if ln.strip() and json.loads(ln)["step"] <= start]
            _atomic_write(out / "metrics.jsonl", "".join(ln + "\n" for ln in kept))
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        _atomic_write(out / "config.yaml", yaml.safe_dump(config, sort_keys=False))
        _atomic_write(out / "versions.json", json.dumps(versions(), indent=2))
    log = open(out / "metrics.jsonl", "a") if out and writer else None

    def record(entry: dict) -> None:
        if log:
            log.write(json.dumps(entry) + "\n")
            log.flush()

    saved_step = start if resume else None

    def checkpoint(name: str, step: int) -> None:
        nonlocal saved_step
        if ckpt_dir is None or not writer:
            return
        _save_checkpoint(ckpt_dir / name, {
            "learner": learner.state_dict(), "optimizer": optimizer.state_dict() if optimizer else {},
            "scheduler": scheduler.state_dict() if scheduler else {}, "generator": generator.get_state(),
            "step": step, "best": best, "elapsed": elapsed, "cpu_elapsed": cpu_elapsed,
            "train_digest": train_digest,
        })
        if name == "last.pt":
            saved_step = step

    from tqdm.auto import tqdm

    flops = {"meta_step": None, "per_test_task": None}
    bar = tqdm(total=total_steps, initial=start, desc="meta-train", disable=not run["progress"], dynamic_ncols=True)
    stopped_early, out_of_time, step = False, False, start
    train_digest = state.get("train_digest", "")
    t_last, cpu_last = time.perf_counter(), time.process_time()
    try:
        for step in range(start + 1, total_steps + 1):
            batch = train_tasks.sample(outer["meta_batch"], generator)
            chained = hashlib.sha1(train_digest.encode())  # a chain, so that a resumed run ends the same
            # device tasks: the drawn indices stand for the images (copying these back would cost a transfer)
            for tensor in ((batch.info["example_index"], batch.info["rotations"]) if run["device_tasks"]
                           else batch.tensors):
                chained.update(tensor.cpu().numpy().tobytes())
            train_digest = chained.hexdigest()
            batch = batch.to(device)
            optimizer.zero_grad(set_to_none=True)
            if world > 1:
                train_metrics = distributed_meta_backward(learner, batch)
            elif run["count_flops"] and flops["meta_step"] is None:
                train_metrics, flops["meta_step"] = count_flops(learner, learner.meta_backward, batch)
            else:
                train_metrics = learner.meta_backward(batch)
            # divergence: checked before the step, so no NaN ever reaches the weights or a checkpoint
            grads = [p.grad.reshape(-1) for p in trainable if p.grad is not None]
            finite_grad = not grads or bool(torch.isfinite(torch.cat(grads)).all())
            finite_loss = all(math.isfinite(v) for v in train_metrics.values())
            if not (finite_loss and finite_grad):
                what = ("the training loss is not finite" if not finite_loss else
                        "the meta-gradient holds NaN or inf")
                raise _diverged(step, total_steps, what, train_metrics, config, ckpt_dir, saved_step)
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
                _check_finite_eval(val, "validation", step, config)
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
    finally:
        bar.close()
        if log:
            log.close()

    if world > 1:
        torch.distributed.barrier()  # rank 0 has written best.pt before any rank reads it
    if best is not None and ckpt_dir is not None and (ckpt_dir / "best.pt").exists():
        learner.load_state_dict(load_checkpoint(ckpt_dir / "best.pt")["learner"])
    t0 = time.perf_counter()
    test = evaluate(learner, exp.test, run["test_tasks"], run["eval_batch"], run["test_seed"], device,
                    progress=run["progress"], desc="test")
    _check_finite_eval(test, "test", step, config)
    test_time = time.perf_counter() - t0
    if run["count_flops"]:
        one = next(exp.test.episodes(1, 1, run["test_seed"])).to(device)
        flops["per_test_task"] = count_flops(learner, learner.evaluate, one)[1]
    results = {
        "test": {k: v for k, v in test.items() if k not in ("values", "digest")},
        "best_val": best,
        "steps": step,
        "resumed_from_step": start if resume else None,
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
        "train_tasks_digest_of": "indices" if run["device_tasks"] else "tensors",
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if torch.device(device).type == "cuda" else None,
        "precision": run["precision"],
        "device_tasks": run["device_tasks"],
        "threads": torch.get_num_threads(),
        "processes": world,
    }
    if out is not None and writer:
        _atomic_write(out / "results.json", json.dumps(results, indent=2))
        _atomic_write(out / "test_values.json", json.dumps(test["values"]))
    if run["progress"]:
        shown = {k: format_ci(v, 100 if k == "accuracy" else 1, 2 if k == "accuracy" else 4)
                 for k, v in results["test"].items()}
        print(f"test ({results['test'][next(iter(results['test']))]['n']} tasks): "
              + ", ".join(f"{k} {v}" for k, v in shown.items()), file=sys.stderr)
    return results
