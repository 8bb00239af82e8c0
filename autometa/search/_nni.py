"""The NNI backend: NNI 3.0's tuners run in this process as a library. NNI is imported here, lazily.

Offered: the TPE, random and evolution tuners, driven through their tuner interface
(``update_search_space`` / ``generate_parameters`` / ``receive_trial_result`` /
``trial_end``), one trial at a time in this process, and NNI's median-stop assessor as
``pruner="median"``. NNI's web server is never started.

Not offered, and why:

- NNI experiments (``nni.experiment.Experiment``, ``nnictl``): they start NNI's Node.js
  server and web UI, which listens on all network interfaces; autometa never starts it.
- GP tuner (fails on every numpy/scipy combination tried with NNI 3.0), Metis tuner (needs
  numpy < 2), SMAC, BOHB, PPO and DNGO tuners (extra dependencies that do not install with
  numpy 2 / Python 3.11), Hyperband advisor and PBT tuner (they need NNI's experiment
  manager to stop and restart trials).
- Conditional spaces (``when``): NNI writes them as nested choices, which its tuners sample
  in their own way; they raise :class:`UnsupportedFeatureError` (use Optuna or Ray).
- Multi-objective searches: NNI's tuners take one scalar.
- NNI is archived (September 2024, last release 3.0); new work should prefer Optuna or Ray.

Resuming: trials are journaled in ``<out_dir>/nni_trials.jsonl``. With ``resume=True`` the
finished trials are kept and count toward ``n_trials``; the TPE tuner is warm-started with
their results (``import_data``); the random tuner's seed is offset by the number of trials
kept; the evolution tuner cannot import results and starts a fresh population. A trial that
was running when the process died runs again with the same parameters under its own number, so
the records hold exactly one trial per number; the numbers re-run are in ``info["rerun"]``.
"""

from __future__ import annotations

import json
import logging
import random
import time
from contextlib import contextmanager

import numpy as np

from autometa.errors import ConfigError
from autometa.search._common import BackendRun, Settings, TrialDiverged, TrialPruned, TrialRecord, error_text
from autometa.search._space import Param, SearchSpace
from autometa.search._trial import Trial, run_objective

TUNERS = ("tpe", "random", "evolution")
JOURNAL = "nni_trials.jsonl"


def to_nni_space(space: SearchSpace) -> dict:
    """NNI's search-space format for an unconditional neutral space."""
    out = {}
    for p in space:
        if p.kind == "choice":
            out[p.name] = {"_type": "choice", "_value": list(p.choices)}
        elif p.kind == "int":
            if p.log:
                out[p.name] = {"_type": "qloguniform", "_value": [p.low, p.high, 1]}
            elif p.step != 1:
                out[p.name] = {"_type": "quniform", "_value": [p.low, p.high, p.step]}
            else:
                out[p.name] = {"_type": "randint", "_value": [p.low, p.high + 1]}  # NNI's upper bound is exclusive
        elif p.log:
            out[p.name] = {"_type": "loguniform", "_value": [p.low, p.high]}
        elif p.step is not None:
            out[p.name] = {"_type": "quniform", "_value": [p.low, p.high, p.step]}
        else:
            out[p.name] = {"_type": "uniform", "_value": [p.low, p.high]}
    return out


def _from_nni(param: Param, value):
    if param.kind == "int":
        return int(min(param.high, max(param.low, round(float(value)))))
    if param.kind == "float":
        return float(value)
    return value.item() if isinstance(value, np.generic) else value


class NNITrial(Trial):
    """:class:`Trial` for the NNI backend: pruning through NNI's median-stop assessor."""

    backend = "nni"

    def __init__(self, number, space, params, assessor):
        super().__init__(number, space, params)
        self._assessor = assessor

    def _should_prune(self) -> bool:
        if self._assessor is None or not self.intermediate:
            return False
        from nni.assessor import AssessResult

        history = [self.intermediate[s] for s in sorted(self.intermediate)]
        return self._assessor.assess_trial(self.number, history) == AssessResult.Bad


@contextmanager
def _private_global_rng(state: dict):
    """Run NNI code that draws from Python's and numpy's global RNGs on a private, seeded stream.

    NNI's evolution tuner uses ``random`` and ``np.random`` directly; library code must not
    depend on or disturb the caller's global random state.
    """
    saved_python, saved_numpy = random.getstate(), np.random.get_state()
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    try:
        yield
    finally:
        state["python"], state["numpy"] = random.getstate(), np.random.get_state()
        random.setstate(saved_python)
        np.random.set_state(saved_numpy)


def _make_tuner(settings: Settings, space: SearchSpace, seed: int | None, rng_state: dict):
    mode = "minimize" if settings.directions[0] == "minimize" else "maximize"
    nni_space = to_nni_space(space)
    if settings.sampler == "tpe":
        from nni.algorithms.hpo.tpe_tuner import TpeTuner

        tuner = TpeTuner(optimize_mode=mode, seed=seed, **settings.sampler_options)
        tuner.update_search_space(nni_space)
    elif settings.sampler == "random":
        from nni.algorithms.hpo.random_tuner import RandomTuner

        tuner = RandomTuner(seed=seed)
        tuner.update_search_space(nni_space)
    elif settings.sampler == "evolution":
        from nni.algorithms.hpo.evolution_tuner import EvolutionTuner

        options = {"population_size": 8, **settings.sampler_options}
        tuner = EvolutionTuner(optimize_mode=mode, **options)
        with _private_global_rng(rng_state):
            tuner.update_search_space(nni_space)
            # the tuner seeds its own RandomState from the OS; reseed and redraw the population
            tuner.random_state = np.random.RandomState(seed)
            tuner.population = []
            for _ in range(tuner.population_size):
                tuner._random_generate_individual()
    else:
        raise ConfigError(f"Unknown NNI tuner {settings.sampler!r}. Choose one of {TUNERS}.")
    return tuner


def _read_journal(path) -> tuple[list[TrialRecord], list[dict]]:
    """Finished records and the starts that never finished (interrupted trials)."""
    ended, started = {}, {}
    if path is None or not path.exists():
        return [], []
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a kill
        if entry["event"] == "start":
            started[entry["number"]] = entry
        else:
            ended[entry["record"]["number"]] = TrialRecord.from_dict(entry["record"])
    return [ended[n] for n in sorted(ended)], [started[n] for n in sorted(started) if n not in ended]


def run(objective, space: SearchSpace, settings: Settings) -> BackendRun:
    """Run the search with an NNI tuner in-process; see :func:`autometa.search` for the arguments."""
    logging.getLogger("nni").setLevel(logging.WARNING)  # NNI logs every proposal at INFO
    journal = settings.out_dir / JOURNAL if settings.out_dir is not None else None
    kept, interrupted = _read_journal(journal)
    if (kept or interrupted) and not settings.resume:
        raise ConfigError(f"{journal} already holds {len(kept) + len(interrupted)} trial(s). Pass resume=True "
                          f"(CLI: --resume) to continue, or another out_dir.")
    records = list(kept)  # an interrupted trial is not a record: its re-run, under its number, is
    next_number = max([r.number for r in kept] + [e["number"] for e in interrupted], default=-1) + 1
    seed = None if settings.seed is None else settings.seed + len(kept) + len(interrupted)
    rng_state = {"python": random.Random(seed).getstate(),
                 "numpy": np.random.RandomState(seed).get_state()}
    tuner = _make_tuner(settings, space, seed, rng_state)
    if settings.sampler == "tpe":
        done = [{"parameter": r.params, "value": r.value} for r in kept if r.state == "complete"]
        if done:
            tuner.import_data(done)
    assessor = None
    if settings.pruner == "median":
        from nni.algorithms.hpo.medianstop_assessor import MedianstopAssessor

        assessor = MedianstopAssessor(optimize_mode=settings.directions[0], **settings.pruner_options)
    if journal is not None:
        journal.parent.mkdir(parents=True, exist_ok=True)
    log = open(journal, "a") if journal is not None else None
    finished = len(kept)
    retry = list(interrupted)
    exhausted = False
    start = time.perf_counter()
    try:
        while finished < settings.n_trials:
            if settings.timeout is not None and time.perf_counter() - start > settings.timeout:
                break
            if retry:
                entry = retry.pop(0)
                number, params = entry["number"], entry["params"]
                from_tuner = False
            else:
                number = next_number
                next_number += 1
                import nni

                try:
                    with _private_global_rng(rng_state):
                        raw = tuner.generate_parameters(number)
                except nni.NoMoreTrialError:  # a small discrete space, every point tried: stop here
                    exhausted = True
                    break
                params = {p.name: _from_nni(p, raw[p.name]) for p in space}
                from_tuner = True
            if log:
                log.write(json.dumps({"event": "start", "number": number, "params": params}) + "\n")
                log.flush()
            trial = NNITrial(number, space, params, assessor)
            began = time.perf_counter()
            state, values, error = "complete", None, None
            try:
                values = run_objective(objective, trial, 1)
            except TrialDiverged as exc:
                state, error = "pruned", str(exc)
                trial.set_user_attr("diverged_at_step", exc.step)
            except TrialPruned:
                state = "pruned"
                if trial.intermediate:
                    values = [trial.intermediate[max(trial.intermediate)]]
            except Exception as exc:
                state, error = "failed", error_text(exc)
            if from_tuner:
                with _private_global_rng(rng_state):
                    if state == "complete":
                        tuner.receive_trial_result(number, raw, values[0])
                    tuner.trial_end(number, state == "complete")
            elif state == "complete" and settings.sampler == "tpe":  # a re-run of an interrupted trial
                tuner.import_data([{"parameter": params, "value": values[0]}])
            if assessor is not None and trial.intermediate:
                history = [trial.intermediate[s] for s in sorted(trial.intermediate)]
                assessor.assess_trial(number, history)  # records the history for later comparisons
                assessor.trial_end(number, state == "complete")
            record = TrialRecord(number, params, state, values, dict(trial.intermediate),
                                 time.perf_counter() - began, error, dict(trial.user_attrs), str(number))
            records.append(record)
            finished += 1
            if log:
                log.write(json.dumps({"event": "end", "record": record.to_dict()}) + "\n")
                log.flush()
            if settings.on_trial_end is not None:
                settings.on_trial_end(record)
    finally:
        if log:
            log.close()
    for entry in retry:  # not re-run (a timeout, or the space ran out): recorded, so no number is missing
        records.append(TrialRecord(entry["number"], entry["params"], "failed", error=(
            "interrupted: the sweep process stopped during this trial; resume to re-run it with the same "
            "parameters")))
    info = {"sampler": settings.sampler, "pruner": settings.pruner, "seed": settings.seed,
            "journal": str(journal) if journal else None, "resumed_from": len(kept) + len(interrupted),
            "interrupted_rerun": len(interrupted), "rerun": [e["number"] for e in interrupted],
            "space_exhausted": exhausted,
            "wall_time_s": round(time.perf_counter() - start, 3)}
    return BackendRun(records, info)
