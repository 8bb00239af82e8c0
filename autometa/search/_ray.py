"""The Ray Tune backend: one machine or a cluster. Ray is imported here, lazily.

Only the current ``ray.tune`` API is used (``Tuner``, ``TuneConfig``, ``RunConfig``,
``FailureConfig``, ``tune.report``, ``tune.get_checkpoint``); no ``ray.air``.

Where Ray runs:

- No ``address``: a local Ray is started for the search (``num_cpus`` CPUs, a 128 MB object
  store, dashboard off) and shut down afterwards; an already initialized Ray is reused and left
  running. The local Ray binds to loopback (``127.0.0.1``) only: nothing it opens is reachable
  from the network. Its processes (GCS server, raylet, dashboard and runtime-env agents,
  workers) end with the search, also when the driver is killed (``kill -9``): a small reaper
  process (``_reaper.py``) waits on a pipe from the driver and ends them when the pipe closes.
- ``address="host:port"`` (or ``"auto"``): an existing cluster, reached within
  ``connect_timeout`` seconds (default 30) or a :class:`ClusterUnreachableError`. Ray >= 2.59 has
  token authentication: with ``RAY_AUTH_MODE=token`` (Ray 2.60 warns and leaves it off otherwise),
  ``ray get-auth-token --generate`` writes ``~/.ray/auth_token`` and every ``ray start`` and
  driver must present that token. The driver finds it in ``$RAY_AUTH_TOKEN``, in the file
  ``$RAY_AUTH_TOKEN_PATH``, or in ``~/.ray/auth_token`` (present on the head machine). From
  another machine, copy it: ``export RAY_AUTH_TOKEN=$(ssh head cat ~/.ray/auth_token)``, or pass
  ``auth_token=...`` (CLI ``--auth-token``; set as ``RAY_AUTH_TOKEN`` while connecting). A
  missing or wrong token raises a :class:`ConfigError` that says this. (The tests start the
  nodes and the driver with ``RAY_AUTH_MODE=token`` in the environment.)

Searchers: ``tpe`` (Optuna's TPE through ``ray.tune.search.optuna.OptunaSearch``, define-by-run,
so conditional spaces and several objectives work) and ``random`` (Ray's variant generator;
for conditional spaces every parameter is drawn and inactive ones are dropped inside the
trial). Schedulers: ``asha``, ``hyperband`` (stop poor trials after ``trial.report``), ``pbt``
(exploits and mutates running trials; the objective must ``report(..., checkpoint=dir)`` and
start from ``trial.last_checkpoint()``; ``seed`` fixes the initial samples, while Ray's PBT draws
its mutations from Python's global ``random``). Resources per trial: ``resources={"cpu": 1,
"gpu": 0.5}`` (fractional GPUs share a device). Failed trials are retried ``max_retries`` times
(``FailureConfig(max_failures=...)``), from their last checkpoint when there is one.

Workers are reused between trials (``TuneConfig(reuse_actors=True)``): a trial's imports (torch,
autometa) are paid once per worker rather than once per trial, which made a 8-trial sweep of a
torch-importing objective about 4x faster here. State an objective leaves in its process
(``torch.set_num_threads``, module globals) carries over to the next trial on that worker.

Resuming. autometa's own journal, not Tune's experiment state, is the record of the search:
the driver appends one JSON line when a trial starts and one when it ends
(``<out_dir>/ray_trials.jsonl``, or ``<storage>/<study_name>.autometa.jsonl``), each written
whole and flushed, so a kill at any moment leaves every finished trial on record. Rerunning with
``resume=True`` keeps every finished trial of the journal, re-runs under its own number (and
parameters) each trial that had started but not finished (and, with ``max_retries`` > 0, each
failed one), and starts a fresh Tune experiment (``<study_name>-<k>``) for only those and the
trials still missing; Tune's own saved state (``tuner.pkl``, searcher state) is never read, so
damaged or half-written Tune files lose nothing. The searcher of the k-th resumed segment is
seeded with ``seed + k``, and TPE is warm-started with the kept trials' results. The progress callback given
to Tune holds plain data only (the journal path and a key), so Tune's state stays picklable.
Without ``out_dir`` or a local ``storage`` there is no journal and nothing to resume.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import ray
from ray import tune

from autometa._plugins import loaded_plugins
from autometa.errors import ClusterUnreachableError, ConfigError
from autometa.search._common import BackendRun, Settings, TrialDiverged, TrialPruned, TrialRecord, error_text
from autometa.search._space import SearchSpace, parse_space
from autometa.search._trial import Trial, run_objective

SCHEDULER_DEFAULTS = {"asha": {"max_t": 100, "grace_period": 1, "reduction_factor": 3},
                      "hyperband": {"max_t": 100, "reduction_factor": 3},
                      "pbt": {"perturbation_interval": 2}}
OBJECT_STORE_BYTES = 128 * 1024 * 1024
JOURNAL = "ray_trials.jsonl"
OWNER_VARIABLE = "AUTOMETA_RAY_OWNER"
_CLUSTER_MODE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
INTERRUPTED = "interrupted: the sweep process stopped during this trial; it was re-run with the same parameters"
# live progress hooks of the searches running in this process, by key: Tune's callback keeps the key only
_HOOKS: dict = {}


class RayTrial(Trial):
    """:class:`Trial` inside a Ray Tune function trainable: reports go through ``tune.report``."""

    backend = "ray"

    def __init__(self, number, space, params, multi_objective, metric_names):
        super().__init__(number, space, params, multi_objective)
        self._metric_names = metric_names
        checkpoint = tune.get_checkpoint()
        if checkpoint is not None:
            self.checkpoint = checkpoint.to_directory()

    def _report(self, value, step, checkpoint):
        metrics = {"autometa_state": "running", "autometa_step": step, "autometa_user_attrs": dict(self.user_attrs)}
        if not self.multi_objective:
            metrics[self._metric_names[0]] = value
        saved = tune.Checkpoint.from_directory(checkpoint) if checkpoint is not None else None
        tune.report(metrics, checkpoint=saved)


class _Numbering:
    """Our trial numbers for the trials of one Tune experiment, from Tune's creation counter.

    Ray's variant generator counts from 0, searchers (``SearchGenerator``) from 1 (``first``).
    The first ``len(reruns)`` trials of a resumed search re-run earlier trials: they take those
    trials' numbers (and parameters); the others take numbers from ``next_number`` on.
    """

    def __init__(self, first: int, reruns: list[tuple[int, dict]], next_number: int):
        self.first = first
        self.reruns = [(int(n), dict(p)) for n, p in reruns]
        self.next_number = next_number

    def index(self, experiment_tag: str) -> int:
        return int(str(experiment_tag).split("_", 1)[0].split("@", 1)[0]) - self.first

    def number(self, experiment_tag: str) -> int:
        index = self.index(experiment_tag)
        if index < len(self.reruns):
            return self.reruns[index][0]
        return self.next_number + index - len(self.reruns)

    def params(self, experiment_tag: str, config: dict, space: SearchSpace) -> dict:
        index = self.index(experiment_tag)
        if index < len(self.reruns):
            return dict(self.reruns[index][1])
        return space.prune({k: v for k, v in (config or {}).items() if k in space})


class _Trainable:
    """The function trainable: builds the trial, runs the objective, reports the outcome.

    A class (not a closure) so that Ray pickles it by value with the objective it holds.
    """

    def __init__(self, objective, space: dict, metric_names: list[str], n_objectives: int, numbering: _Numbering,
                 plugins: list[str] = ()):
        self.objective = objective
        self.plugins = list(plugins)  # the driver's --plugin files: a worker registers what they register
        self.space = space
        self.metric_names = metric_names
        self.n_objectives = n_objectives
        self.numbering = numbering

    def __call__(self, config: dict) -> None:
        from autometa._plugins import load_plugin
        from autometa.hypergrad._batching import GPU_SHARE_VARIABLE

        for path in self.plugins:  # the same path on every node of a cluster
            load_plugin(path)

        gpus = ray.get_runtime_context().get_assigned_resources().get("GPU")
        if gpus:  # the trial's vmap memory budget is taken from its share of the GPU (autometa.hypergrad)
            os.environ[GPU_SHARE_VARIABLE] = str(gpus)
        else:
            os.environ.pop(GPU_SHARE_VARIABLE, None)  # workers are reused between trials
        space = parse_space(self.space)
        tag = _tag_in_trial()
        params = self.numbering.params(tag, config, space)
        trial = RayTrial(self.numbering.number(tag), space, params, self.n_objectives > 1, self.metric_names)
        final = {"autometa_user_attrs": trial.user_attrs}
        try:
            values = run_objective(self.objective, trial, self.n_objectives)
        except TrialPruned as exc:
            last = trial.intermediate[max(trial.intermediate)] if trial.intermediate else float("nan")
            if isinstance(exc, TrialDiverged):
                trial.set_user_attr("diverged_at_step", exc.step)
                final.update(autometa_error=str(exc))
                last = float("nan")
            tune.report({**final, "autometa_state": "pruned", self.metric_names[0]: last})
            return
        tune.report({**final, "autometa_state": "complete", **dict(zip(self.metric_names, values))})


def _tag_in_trial() -> str:
    """The experiment tag of the running trial, read from its folder name ``<trial name>_<tag>_<date>``."""
    context = tune.get_context()
    return Path(context.get_trial_dir()).name[len(context.get_trial_name()) + 1:]


class _DefineByRun:
    """OptunaSearch's define-by-run space: samples the neutral space with conditions."""

    def __init__(self, space: dict):
        self.space = space

    def __call__(self, optuna_trial):
        from autometa.search._optuna import suggest_space

        suggest_space(optuna_trial, parse_space(self.space))


def to_ray_space(space: SearchSpace) -> dict:
    """Ray Tune sampling domains for every parameter (conditions are applied inside the trial)."""
    out = {}
    for p in space:
        if p.kind == "choice":
            out[p.name] = tune.choice(list(p.choices))
        elif p.kind == "int":
            if p.log:
                out[p.name] = tune.lograndint(p.low, p.high + 1)
            else:
                out[p.name] = tune.qrandint(p.low, p.high, p.step) if p.step != 1 else tune.randint(p.low, p.high + 1)
        elif p.log:
            out[p.name] = tune.loguniform(p.low, p.high)
        elif p.step is not None:
            out[p.name] = tune.quniform(p.low, p.high, p.step)
        else:
            out[p.name] = tune.uniform(p.low, p.high)
    return out


def _searcher(settings: Settings, space: SearchSpace, modes, seed, reruns: list[dict], kept: list[TrialRecord]):
    """Tune's search algorithm and param space; re-runs first, then new samples seeded with ``seed``."""
    if settings.sampler == "random":
        from ray.tune.search.basic_variant import BasicVariantGenerator

        return (BasicVariantGenerator(random_state=seed, points_to_evaluate=[dict(p) for p in reruns] or None,
                                      **settings.sampler_options), to_ray_space(space))
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    from autometa.search._optuna import to_distribution

    options = dict(settings.sampler_options)
    if space.conditional:
        options.setdefault("group", True)
        options.setdefault("multivariate", True)
    sampler = optuna.samplers.TPESampler(seed=seed, **options)
    multi = settings.n_objectives > 1
    # a define-by-run OptunaSearch ignores Tune's metric and mode, so it gets its own
    searcher = OptunaSearch(space=_DefineByRun(space.to_dict()), sampler=sampler,
                            metric=settings.metric_names if multi else settings.metric_names[0],
                            mode=modes if multi else modes[0], points_to_evaluate=[dict(p) for p in reruns] or None)
    study = getattr(searcher, "_ot_study", None)  # warm start: the kept trials' results inform TPE
    for record in kept if study is not None else ():
        if record.state != "complete" or not record.values:
            continue
        distributions = {n: to_distribution(space[n]) for n in record.params if n in space}
        values = record.values if multi else None
        study.add_trial(optuna.trial.create_trial(params=dict(record.params), distributions=distributions,
                                                  values=values, value=None if multi else record.values[0]))
    return searcher, None


def _scheduler(settings: Settings, space: SearchSpace):
    name = settings.scheduler
    if name is None:
        return None
    options = {**SCHEDULER_DEFAULTS[name], **settings.pruner_options}
    if name == "asha":
        from ray.tune.schedulers import ASHAScheduler

        return ASHAScheduler(time_attr="training_iteration", **options)
    if name == "hyperband":
        from ray.tune.schedulers import HyperBandScheduler

        return HyperBandScheduler(time_attr="training_iteration", **options)
    from ray.tune.schedulers import PopulationBasedTraining

    options.setdefault("hyperparam_mutations", to_ray_space(space))
    return PopulationBasedTraining(time_attr="training_iteration", **options)


class Journal:
    """autometa's record of a Ray search: one JSON line per trial start and end, appended by the driver.

    Each line is written with one ``write`` and flushed, so a kill leaves at most one partial
    last line, which :meth:`read` skips (and :meth:`open` ends with a newline first).
    """

    def __init__(self, path: Path):
        self.path = Path(path)

    def read(self) -> tuple[dict[int, TrialRecord], dict[int, dict], int]:
        """``(ended records by number, params of started-but-unfinished trials by number, segments)``."""
        ended: dict[int, TrialRecord] = {}
        started: dict[int, dict] = {}
        segments = 0
        if not self.path.exists():
            return ended, started, segments
        for line in self.path.read_text().splitlines():
            try:
                entry = json.loads(line)
                event = entry["event"]
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by a kill
            if event == "segment":
                segments += 1
            elif event == "start":
                started[int(entry["number"])] = entry["params"]
            elif event == "end":
                record = TrialRecord.from_dict(entry["record"])
                ended[record.number] = record
        unfinished = {n: p for n, p in started.items() if n not in ended}
        return ended, unfinished, segments

    def append(self, entry: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            last = os.pread(fd, 1, size - 1) if size else b"\n"
            line = ("" if last == b"\n" else "\n") + json.dumps(entry, default=str) + "\n"
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)


class _JournalCallback(tune.Callback):
    """Writes each trial's start and end to the journal and passes ended records to the progress hook.

    Its state is plain data (paths, names, numbers), so Tune's pickled experiment state holds
    nothing that cannot be restored; the live hook is looked up by key in this process.
    """

    def __init__(self, journal: str | None, hook_key: str | None, space: dict, metric_names: list[str],
                 numbering: _Numbering):
        self.journal = journal
        self.hook_key = hook_key
        self.space = space
        self.metric_names = metric_names
        self.numbering = numbering
        self.history: dict[str, dict[int, float]] = {}
        self.ended: dict[int, TrialRecord] = {}

    def _params(self, trial) -> dict:
        return self.numbering.params(trial.experiment_tag, trial.config, parse_space(self.space))

    def on_trial_start(self, iteration, trials, trial, **info):
        if self.journal is not None:
            Journal(self.journal).append({"event": "start", "number": self.numbering.number(trial.experiment_tag),
                                          "params": self._params(trial), "ray_trial_id": trial.trial_id})

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if result.get("autometa_state") == "running" and self.metric_names[0] in result:
            value = result[self.metric_names[0]]
            if value is not None and not math.isnan(float(value)):
                self.history.setdefault(trial.trial_id, {})[int(result["autometa_step"])] = float(value)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._end(trial, None)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._end(trial, _trial_error(trial))

    def _end(self, trial, error: str | None):
        record = _record(self.metric_names, self.numbering.number(trial.experiment_tag), self._params(trial),
                         dict(trial.last_result or {}), "failed" if error is not None else None, error,
                         self.history.pop(trial.trial_id, {}), trial.trial_id)
        self.ended[record.number] = record
        if self.journal is not None:
            Journal(self.journal).append({"event": "end", "record": record.to_dict()})
        hook = _HOOKS.get(self.hook_key)
        if hook is not None:
            hook(record)


def _trial_error(trial) -> str:
    """``Type: message`` of the exception that ended a trial, read from the files Tune just wrote locally."""
    from ray import cloudpickle

    try:
        path = trial.pickled_error_file
        if path and os.path.exists(path):
            with open(path, "rb") as handle:
                raised = cloudpickle.load(handle)
            return error_text(getattr(raised, "cause", None) or raised)  # a RayTaskError wraps the objective's
    except Exception:  # an exception that does not unpickle here: its text trace
        pass
    try:
        path = trial.error_file
        lines = Path(path).read_text().strip().splitlines() if path and os.path.exists(path) else []
        return lines[-1] if lines else "failed (Ray recorded no error)"
    except OSError:
        return "failed (Ray recorded no error)"


def _record(metric_names: list[str], number: int, params: dict, metrics: dict, state, error, history,
            trial_id) -> TrialRecord:
    state = state or {"complete": "complete", "failed": "failed"}.get(metrics.get("autometa_state"), "pruned")
    # a trial that a scheduler stopped never sent its final result: it was pruned
    values = None
    if state == "complete":
        values = [float(metrics[n]) for n in metric_names]
    elif state == "pruned" and metrics.get(metric_names[0]) is not None:
        value = float(metrics[metric_names[0]])
        values = None if math.isnan(value) else [value]
    if state == "failed":
        error = error or "failed (Ray recorded no error)"
    elif state == "pruned":
        error = error or metrics.get("autometa_error")
    return TrialRecord(number, params, state, values, history or {}, metrics.get("time_total_s"), error,
                       dict(metrics.get("autometa_user_attrs") or {}), str(trial_id))


class LocalRay:
    """A local Ray instance started by autometa, and the reaper that ends its processes with this one."""

    def __init__(self, reaper: subprocess.Popen, token: str):
        self.reaper, self.token = reaper, token

    def stop(self) -> None:
        """``ray.shutdown()``, then let the reaper end whatever of this instance is left (and wait for it)."""
        try:
            ray.shutdown()
        finally:
            if self.reaper.stdin is not None and not self.reaper.stdin.closed:
                self.reaper.stdin.close()
            try:
                self.reaper.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass


def ray_is_running() -> bool:
    """Whether this process is already connected to a Ray instance."""
    return ray.is_initialized()


def start_local_ray(num_cpus: int | None = None, object_store_memory: int = OBJECT_STORE_BYTES,
                    node_ip_address: str = "127.0.0.1", num_gpus: int | None = None) -> LocalRay:
    """Start a local Ray bound to ``node_ip_address`` (loopback) whose processes end with this process.

    Every process of the instance inherits ``AUTOMETA_RAY_OWNER=<token>``; a reaper in its own
    session ends them when this process closes the pipe to it or dies (see ``_reaper.py``).
    """
    token = uuid.uuid4().hex
    reaper = subprocess.Popen([sys.executable, str(Path(__file__).with_name("_reaper.py")), token, str(os.getpid())],
                              stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True, close_fds=True)
    from ray._private import ray_constants

    os.environ[OWNER_VARIABLE] = token  # after starting the reaper, so that it does not carry the mark
    # ray.init turns a loopback _node_ip_address into the machine's outward address unless Ray's
    # "no cluster" mode is on; with it, the GCS, raylet, agents and workers all listen on 127.0.0.1
    loopback = node_ip_address in ("127.0.0.1", "localhost", "::1")
    saved_mode, saved_flag = os.environ.get(_CLUSTER_MODE), ray_constants.ENABLE_RAY_CLUSTER
    if loopback:
        os.environ[_CLUSTER_MODE] = "0"
        ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        ray.init(num_cpus=num_cpus, num_gpus=num_gpus, object_store_memory=object_store_memory,
                 include_dashboard=False, _node_ip_address=node_ip_address, log_to_driver=False,
                 configure_logging=False)
    except BaseException:
        reaper.stdin.close()
        reaper.wait(timeout=30)
        raise
    finally:
        os.environ.pop(OWNER_VARIABLE, None)
        ray_constants.ENABLE_RAY_CLUSTER = saved_flag
        if saved_mode is None:
            os.environ.pop(_CLUSTER_MODE, None)
        else:
            os.environ[_CLUSTER_MODE] = saved_mode
    return LocalRay(reaper, token)


def _probe(address: str, timeout: float) -> None:
    """Raise ClusterUnreachableError unless something accepts a TCP connection at ``host:port`` in time."""
    if address == "auto" or "://" in address:
        return
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"address must look like host:port (e.g. 10.0.0.5:6379) or 'auto'. Got {address!r}.")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ClusterUnreachableError(
            f"No Ray cluster answered at {address} within {timeout:g} s ({exc}). Check the head node's address "
            f"and port (`ray status` on the head prints them) and that it is running, or raise --connect-timeout; "
            f"without --address a local Ray is started.") from exc


def init_ray(settings: Settings) -> LocalRay | bool:
    """Start or join Ray unless it is running: a :class:`LocalRay`, True (joined a cluster) or False."""
    if ray.is_initialized():
        if settings.address is not None and settings.address != "auto":
            _probe(settings.address, settings.connect_timeout)
            current = ray.get_runtime_context().gcs_address
            if current != settings.address:
                raise ConfigError(
                    f"This process is already connected to Ray at {current}, not at address={settings.address!r}. "
                    f"Call ray.shutdown() first to join {settings.address}, or drop address to use the running Ray.")
        return False
    if settings.address is None:
        return start_local_ray(settings.num_cpus, num_gpus=settings.num_gpus)
    timeout = settings.connect_timeout
    _probe(settings.address, timeout)
    saved = {k: os.environ.get(k) for k in ("RAY_AUTH_TOKEN", "RAY_gcs_rpc_server_reconnect_timeout_s")}
    if settings.auth_token:
        os.environ["RAY_AUTH_TOKEN"] = settings.auth_token
    os.environ.setdefault("RAY_gcs_rpc_server_reconnect_timeout_s", str(max(1, int(timeout))))
    try:
        ray.init(address=settings.address, log_to_driver=False, configure_logging=False)
    except Exception as exc:
        if "auth" in f"{type(exc).__name__} {exc}".lower():
            raise ConfigError(
                f"The Ray cluster at {settings.address} refused this driver's authentication token ({exc}). "
                f"Ray >= 2.59 clusters started with `ray start` need the token the head wrote to "
                f"~/.ray/auth_token: export RAY_AUTH_TOKEN=<its content>, or pass auth_token=... "
                f"(CLI: --auth-token), or start every node with RAY_AUTH_MODE=disabled on a trusted network."
            ) from exc
        if isinstance(exc, (ConnectionError, TimeoutError)) or "timed out" in str(exc).lower():
            raise ClusterUnreachableError(f"Ray at {settings.address} did not complete the connection within "
                                          f"{timeout:g} s ({exc}). Check that it is a Ray head node.") from exc
        raise
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return True


def _storage_path(settings: Settings) -> tuple[str, Path | None]:
    """Ray's ``storage_path`` and, when it is a temporary folder, that folder (to delete)."""
    if settings.storage:
        if "://" in settings.storage:
            return settings.storage, None
        return str(Path(settings.storage).resolve()), None
    if settings.out_dir is not None:
        return str(settings.out_dir / "ray"), None
    temporary = Path(tempfile.mkdtemp(prefix="autometa-ray-"))
    return str(temporary), temporary


def _journal_path(settings: Settings) -> Path | None:
    if settings.out_dir is not None:
        return settings.out_dir / JOURNAL
    if settings.storage and "://" not in settings.storage:
        return Path(settings.storage).resolve() / f"{settings.study_name}.autometa.jsonl"
    return None


def run(objective, space: SearchSpace, settings: Settings) -> BackendRun:
    """Run the search with Ray Tune; see :func:`autometa.search` and the module's notes on resuming."""
    modes = ["min" if d == "minimize" else "max" for d in settings.directions]
    multi = settings.n_objectives > 1
    first = 0 if settings.sampler == "random" else 1
    storage_path, temporary = _storage_path(settings)
    journal_path = _journal_path(settings)
    journal = Journal(journal_path) if journal_path is not None else None
    ended, unfinished, segments = journal.read() if journal is not None else ({}, {}, 0)
    tune_state = tune.Tuner.can_restore(f"{storage_path.rstrip('/')}/{settings.study_name}")
    if (ended or unfinished or tune_state) and not settings.resume:
        where = journal_path if (ended or unfinished) else f"{storage_path}/{settings.study_name}"
        raise ConfigError(f"{where} already holds a Ray Tune search ({len(ended)} finished trial(s)). Pass "
                          f"resume=True (CLI: --resume) to continue it, or another out_dir / study_name.")
    rerun_failed = settings.max_retries > 0
    kept = {n: r for n, r in ended.items() if not (rerun_failed and r.state == "failed")}
    reruns = sorted(unfinished.items()) + sorted((n, r.params) for n, r in ended.items() if n not in kept)
    new = max(0, settings.n_trials - len(kept) - len(reruns))
    to_run = len(reruns) + new
    known = set(ended) | set(unfinished)
    numbering = _Numbering(first, reruns, max(known, default=-1) + 1)
    # each segment draws from its own stream: a searcher seeded as before would propose again the
    # parameters of the trials it re-runs (their proposals drew nothing from the seeded stream)
    seed = None if settings.seed is None else settings.seed + segments
    name = settings.study_name if segments == 0 else f"{settings.study_name}-{segments}"
    info = {"sampler": settings.sampler, "scheduler": settings.scheduler, "seed": settings.seed,
            "storage": None if temporary else f"{storage_path.rstrip('/')}/{name}", "address": settings.address,
            "resources": settings.resources or {"cpu": 1}, "journal": str(journal_path) if journal_path else None,
            "resumed_from": len(ended) + len(unfinished), "rerun": [n for n, _ in reruns],
            "restored": bool(ended or unfinished)}
    start = time.perf_counter()
    callback = None
    if to_run:
        hook_key = uuid.uuid4().hex if settings.on_trial_end is not None else None
        if hook_key is not None:
            _HOOKS[hook_key] = settings.on_trial_end
        callback = _JournalCallback(str(journal_path) if journal_path else None, hook_key, space.to_dict(),
                                    list(settings.metric_names), numbering)
        trainable = tune.with_resources(
            _Trainable(objective, space.to_dict(), settings.metric_names, settings.n_objectives, numbering,
                       loaded_plugins()),
            settings.resources or {"cpu": 1})
        started = init_ray(settings)
        try:
            if journal is not None:
                journal.append({"event": "segment", "name": name, "reruns": [n for n, _ in reruns], "new": new,
                                "next_number": numbering.next_number, "seed": seed})
            searcher, param_space = _searcher(settings, space, modes, seed, [p for _, p in reruns],
                                              list(kept.values()))
            tune_config = tune.TuneConfig(
                num_samples=to_run, search_alg=searcher, scheduler=_scheduler(settings, space),
                max_concurrent_trials=settings.max_concurrent, reuse_actors=settings.reuse_workers,
                metric=None if multi else settings.metric_names[0], mode=None if multi else modes[0])
            run_config = tune.RunConfig(name=name, storage_path=storage_path, verbose=0, callbacks=[callback],
                                        failure_config=tune.FailureConfig(max_failures=settings.max_retries))
            tune.Tuner(trainable, param_space=param_space, tune_config=tune_config, run_config=run_config).fit()
        finally:
            _HOOKS.pop(hook_key, None)
            if isinstance(started, LocalRay):
                started.stop()
            if temporary is not None:
                shutil.rmtree(temporary, ignore_errors=True)
    # the journal is the record; without one, what the callback saw in this process
    final = dict(kept)
    final.update(journal.read()[0] if journal is not None else (callback.ended if callback else {}))
    for number in set(unfinished) | {n for n, _ in reruns}:
        if number not in final:  # started, never ended, and not finished by this run either
            final[number] = TrialRecord(number, dict(unfinished.get(number) or dict(reruns).get(number) or {}),
                                        "failed", error=INTERRUPTED.replace("; it was re-run", "; resume to re-run"))
    info["wall_time_s"] = round(time.perf_counter() - start, 3)
    return BackendRun(list(final.values()), info)
