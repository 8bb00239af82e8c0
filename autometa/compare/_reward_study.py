"""The reward study: hand-crafted against learned fillers of the reward slot, in environment steps.

One config names the environment (the one-goal grid world, or the delayed-reward CartPole, which
needs ``pip install 'autometa[rl]'``), the REINFORCE budget (episodes per batch, a cap on batches),
the threshold return and the arms (a reward filler, optionally with trainer overrides such as a fixed
``gamma``). For every seed, each arm starts from the same zero-initialised linear softmax policy and
the same random stream, so differences between arms are paired by seed. Reported per arm: the
environment steps until the mean return of the last ``window`` batches reaches ``threshold``, with a
95% interval over the seeds that reached it, how many did not (censored at the cap; their steps are
also shown counted at the cap, a lower bound), and the paired difference to the reference over the
seeds where both reached it, whatever its sign.

Example configs: ``experiments/reward_gridworld.yaml``, ``experiments/reward_cartpole.yaml``,
``experiments/reward_discount_gridworld.yaml`` (``study: reward``); run one with
``autometa compare CONFIG --out DIR``; ``autometa report DIR`` re-renders its report.
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
from torch import nn

from autometa._params import did_you_mean
from autometa.compare._stats import paired_difference
from autometa.compare._studies import arm_problems, open_study
from autometa.errors import ConfigError
from autometa.experiment._config import deep_merge, read_mapping
from autometa.experiment._stats import mean_ci
from autometa.learners import DelayedRewardCartPole, GridWorld, LIRPGTrainer
from autometa.slots import FILLERS

STUDY = "reward"
ENVS = {"gridworld": GridWorld, "delayed_cartpole": DelayedRewardCartPole}
DEFAULTS: dict = {
    "study": STUDY,
    "description": "",
    "env": {"name": "gridworld", "size": 6, "max_steps": 40},
    "episodes": 8,            # episodes per batch (one policy step per batch)
    "batches": 150,           # the cap: a run that has not reached the threshold by then is censored
    "threshold": 0.8,         # mean return of the last `window` batches
    "window": 5,
    "trainer": {"lr": 0.5, "meta_lr": 1e-2, "gamma": 0.99},
    "seeds": [0],
    "reference": "extrinsic",
    "arms": {},
}
ARM_KEYS = {"kind", "reward", "trainer"}
KINDS = ("hand-crafted", "learned")
EXAMPLE = "experiments/reward_gridworld.yaml"


def build_env(spec: dict):
    """The environment of ``env: {name, ...}`` (``gridworld`` or ``delayed_cartpole``)."""
    spec = dict(spec)
    name = spec.pop("name", None)
    if name not in ENVS:
        raise ConfigError(f"Unknown env {name!r}{did_you_mean(str(name), ENVS)}. Choose one of {sorted(ENVS)}.")
    try:
        return ENVS[name](**spec)
    except TypeError as exc:
        raise ConfigError(f"env {name!r}: {exc}") from exc


def reward_spec(arm: dict, env, seed: int) -> dict:
    """The arm's reward filler config with the environment's sizes and the seed filled in where the
    filler takes them and the config does not set them (a learned reward starts from a different
    network for every seed)."""
    spec = copy.deepcopy(arm.get("reward", "extrinsic"))
    spec = {"name": spec} if isinstance(spec, str) else spec
    cls = FILLERS["reward"].get(str(spec.get("name", "")).lower()) if isinstance(spec, dict) else None
    if cls is not None:
        taken = inspect.signature(cls).parameters
        for key, value in (("observation_dim", env.observation_dim), ("num_actions", env.num_actions),
                           ("seed", seed)):
            if key in taken and key not in spec:
                spec[key] = value
    return spec


def _trainer(policy: nn.Module, config: dict, arm: dict, env, seed: int) -> LIRPGTrainer:
    return LIRPGTrainer(policy, reward_spec(arm, env, seed), **{**config["trainer"], **arm.get("trainer", {})})


def load_study_config(source, check_env: bool = True) -> dict:
    """Read a reward study config (YAML path or dict), fill defaults and validate it; every problem in one
    error. ``check_env`` builds the environment (needs gymnasium for CartPole)."""
    raw = read_mapping(source, "Reward study config", EXAMPLE)
    problems = [f"unknown key {k!r}{did_you_mean(k, DEFAULTS)}" for k in raw if k not in DEFAULTS]
    config = deep_merge(copy.deepcopy(DEFAULTS), raw)
    if "env" in raw:
        config["env"] = copy.deepcopy(raw["env"])  # no defaults of another environment mixed in
    if config["study"] != STUDY:
        problems.append(f"study must be {STUDY!r} for this runner. Got {config['study']!r}")
    for key in ("episodes", "batches", "window"):
        value = config[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            problems.append(f"{key} must be an integer >= 1. Got {value!r}")
    if not isinstance(config["threshold"], (int, float)) or isinstance(config["threshold"], bool):
        problems.append(f"threshold must be a number (a mean episode return). Got {config['threshold']!r}")
    env = None
    if not isinstance(config["env"], dict):
        problems.append(f"env must be a mapping {{name: {' | '.join(ENVS)}, ...}}. Got {config['env']!r}")
    elif check_env:
        try:
            env = build_env(config["env"])
        except ConfigError as exc:
            problems.append(str(exc))
    more, arms = arm_problems(config, ARM_KEYS, KINDS, "{kind, reward, trainer}")
    problems += more
    for name, arm in arms.items():
        if not isinstance(arm.get("trainer", {}), dict):
            problems.append(f"arm {name!r}: trainer must be a mapping of LIRPGTrainer arguments")
            continue
        if env is not None:
            try:  # builds the filler and checks the trainer's arguments on a throw-away policy
                _trainer(nn.Linear(env.observation_dim, env.num_actions), config, arm, env, 0)
            except (ConfigError, TypeError) as exc:
                problems.append(f"arm {name!r}: {exc}")
    if problems:
        raise ConfigError("Invalid reward study config:\n  - " + "\n  - ".join(problems))
    return config


def run_arm(config: dict, arm: dict, env, seed: int) -> dict:
    """REINFORCE (with the arm's reward filler) from a zero-initialised linear policy until the mean return
    of the last ``window`` batches reaches ``threshold``, or ``batches`` batches."""
    policy = nn.Linear(env.observation_dim, env.num_actions)
    with torch.no_grad():
        policy.weight.zero_()
        policy.bias.zero_()
    trainer = _trainer(policy, config, arm, env, seed)
    generator = torch.Generator().manual_seed(seed)
    steps, history, gammas, reached = 0, [], [], None
    start = time.process_time()
    for _ in range(config["batches"]):
        batch = env.rollout(policy, trainer.params(), config["episodes"], generator)
        metrics = trainer.step(batch)
        steps += metrics["steps"]
        history.append(metrics["mean_return"])
        gammas.append(metrics["gamma"])
        if len(history) >= config["window"] and np.mean(history[-config["window"]:]) >= config["threshold"]:
            reached = steps
            break
    result = {"seed": seed, "steps_to_threshold": reached, "steps": steps, "returns": history,
              "cpu_s": time.process_time() - start}
    if trainer.reward.discount() is not None:  # a learned discount: its trajectory, one value per batch
        result["gammas"] = gammas
    return result


def summarize(results: dict, reference: str) -> dict:
    """Per arm: steps to threshold over the seeds that reached it (mean, 95% CI), the count censored, the
    mean with censored runs counted at their steps so far (a lower bound), and the paired difference to
    ``reference`` over the seeds where both reached the threshold."""
    ref = {r["seed"]: r["steps_to_threshold"] for r in results.get(reference, [])}
    out = {}
    for name, runs in results.items():
        reached = [r["steps_to_threshold"] for r in runs if r["steps_to_threshold"] is not None]
        entry = {"steps": mean_ci(reached), "not_reached": len(runs) - len(reached), "seeds": len(runs),
                 "steps_censored_at_cap": mean_ci([r["steps_to_threshold"] or r["steps"] for r in runs]),
                 "cpu_s": float(sum(r["cpu_s"] for r in runs))}
        pairs = [(r["steps_to_threshold"], ref[r["seed"]]) for r in runs
                 if r["steps_to_threshold"] is not None and ref.get(r["seed"]) is not None]
        if name != reference and len(pairs) >= 2:
            entry["vs_reference"] = paired_difference([a for a, _ in pairs], [b for _, b in pairs])
            entry["faster_seeds"] = sum(a < b for a, b in pairs)
        gammas = [r["gammas"][-1] for r in runs if r.get("gammas")]
        if gammas:
            entry["final_gamma"] = mean_ci(gammas)
        out[name] = entry
    return out


def _ci(stats: dict) -> str:
    if stats["mean"] is None:
        return "-"
    return f"{stats['mean']:.0f}" + (f" ± {stats['ci95']:.0f}" if stats["ci95"] is not None else "")


def format_table(summary: dict, arms: dict, reference: str) -> str:
    """A markdown table: one row per arm."""
    lines = ["| arm | kind | seeds reached | env steps to threshold (mean ± 95% CI) | censored at cap counted "
             "(lower bound) | vs reference (paired, seeds both reached) | CPU s |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, s in summary.items():
        diff = s.get("vs_reference")
        if diff is None:
            diff_text = "reference" if name == reference else "-"
        else:
            ci = f" ± {diff['ci95']:.0f}" if diff.get("ci95") is not None else ""
            p = f", p={diff['p_value']:.2g}" if diff.get("p_value") is not None else ""
            diff_text = f"{diff['mean']:+.0f}{ci}{p}; faster in {s['faster_seeds']}/{diff['n']}"
        label = name + (f" (final gamma {s['final_gamma']['mean']:.3f})" if "final_gamma" in s else "")
        lines.append(f"| {label} | {arms.get(name, {}).get('kind', '?')} | {s['steps']['n']}/{s['seeds']} | "
                     f"{_ci(s['steps'])} | {_ci(s['steps_censored_at_cap'])} | {diff_text} | {s['cpu_s']:.0f} |")
    return "\n".join(lines)


def plot_study(results: dict, config: dict, path: Path) -> Path | None:
    """Left: the fraction of seeds that reached the threshold within so many environment steps, per arm.
    Right: the learned discount per batch (arms with one)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    learned = {name: runs for name, runs in results.items() if any(r.get("gammas") for r in runs)}
    fig, axes = plt.subplots(1, 2 if learned else 1, figsize=(10 if learned else 5.5, 3.8), squeeze=False)
    ax = axes[0][0]
    cap = max((r["steps"] for runs in results.values() for r in runs), default=1)
    for name, runs in results.items():
        reached = sorted(r["steps_to_threshold"] for r in runs if r["steps_to_threshold"] is not None)
        xs = [0, *reached, cap]
        ys = [0, *[(i + 1) / len(runs) for i in range(len(reached))], len(reached) / len(runs)]
        ax.step(xs, ys, where="post", label=name)
    ax.set_xlabel("environment steps")
    ax.set_ylabel(f"fraction of seeds at mean return >= {config['threshold']:g}")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    if learned:
        ax = axes[0][1]
        for color, (name, runs) in enumerate(learned.items()):
            for i, r in enumerate(runs):
                ax.plot(range(1, len(r["gammas"]) + 1), r["gammas"], color=f"C{color}", alpha=0.5,
                        label=name if i == 0 else None)
        ax.set_xlabel("batch (policy step)")
        ax.set_ylabel("learned discount gamma")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"reward study: {config['env'].get('name')}, {len(config['seeds'])} seeds", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _describe(config: dict) -> str:
    env = ", ".join(f"{k} {v}" for k, v in config["env"].items() if k != "name")
    trainer = ", ".join(f"{k} {v}" for k, v in config["trainer"].items())
    return (f"Environment {config['env'].get('name')} ({env}); zero-initialised linear softmax policy, REINFORCE "
            f"with a mean baseline, {config['episodes']} episodes per batch, at most {config['batches']} batches; "
            f"trainer {trainer}; threshold: mean return of the last {config['window']} batches >= "
            f"{config['threshold']:g}; seeds {config['seeds']}; reference {config['reference']}.")


def render_study(out_dir) -> Path:
    """Write ``summary.md``, ``report.md`` and ``reward_study.png`` from ``out_dir/results.json``."""
    out = Path(out_dir)
    data = json.loads((out / "results.json").read_text())
    config, results = data["config"], data["results"]
    summary = summarize(results, config["reference"])
    table = format_table(summary, config["arms"], config["reference"])
    (out / "summary.md").write_text(table + "\n")
    lines = ["# autometa reward study", ""]
    if config.get("description"):
        lines += [config["description"].strip(), ""]
    lines += [_describe(config), "", "Arms:", ""]
    lines += [f"- **{name}** ({arm['kind']}): reward `{json.dumps(arm.get('reward', 'extrinsic'))}`"
              + (f", trainer `{json.dumps(arm['trainer'])}`" if arm.get("trainer") else "")
              for name, arm in config["arms"].items()]
    lines += ["", table, "",
              "Steps are counted until the mean return of the last batches first reaches the threshold; runs "
              "that did not reach it within the cap are censored: left out of the first interval and counted "
              "at the cap in the second (a lower bound on their true steps). The paired difference uses the "
              "seeds where both arms reached the threshold (Student t over seeds).", ""]
    if plot_study(results, config, out / "reward_study.png") is not None:
        lines += ["![reward study](reward_study.png)", ""]
    (out / "report.md").write_text("\n".join(lines))
    return out / "report.md"


def run_study(source, out_dir: str | Path, log: Callable[[str], None] = print, resume: bool = False,
              overwrite: bool = False) -> dict:
    """Run every (seed, arm) of a reward study config; write ``runs.jsonl``, ``results.json``, ``summary.md``,
    ``report.md`` and ``reward_study.png`` to ``out_dir``.

    Args:
        resume: keep the finished (arm, seed) runs of ``runs.jsonl`` in ``out_dir`` and run the rest (the
            config must be the one they were run with).
        overwrite: delete what ``out_dir`` holds first.

    Returns ``{"config", "results", "summary"}``.

    Raises:
        ConfigError: an invalid config (every problem at once).
        ResultsDirError: ``out_dir`` holds results and neither ``resume`` nor ``overwrite`` is set, or it
            holds another command's results, or resuming with a different config.
    """
    config = load_study_config(source)
    out, runs_path, done = open_study(out_dir, config, resume, overwrite, key=("arm", "seed"))
    env = build_env(config["env"])
    log(_describe(config))
    results: dict = {arm: [] for arm in config["arms"]}
    for seed in config["seeds"]:
        for name, arm in config["arms"].items():
            if (name, seed) not in done:
                result = run_arm(config, arm, env, seed)
                with runs_path.open("a") as f:
                    f.write(json.dumps({"arm": name, "seed": seed, "result": result}) + "\n")
                done[(name, seed)] = result
                gamma = f", final gamma {result['gammas'][-1]:.3f}" if result.get("gammas") else ""
                log(f"seed {seed} {name:>20}: steps to threshold {result['steps_to_threshold']} "
                    f"({result['cpu_s']:.1f} CPU s{gamma})")
            results[name].append(done[(name, seed)])
    summary = summarize(results, config["reference"])
    (out / "results.json").write_text(json.dumps({"config": config, "summary": summary, "results": results}))
    render_study(out)
    log(format_table(summary, config["arms"], config["reference"]))
    return {"config": config, "results": results, "summary": summary}
