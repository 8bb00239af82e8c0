"""The Ray backend's journal survives a line cut short by a kill; trial numbers map across resumed segments."""

import json

import pytest

pytest.importorskip("ray.tune")

from autometa.search._common import TrialRecord
from autometa.search._ray import Journal, _Numbering


def test_a_line_cut_short_by_a_kill_loses_nothing_else(tmp_path):
    journal = Journal(tmp_path / "ray_trials.jsonl")
    journal.append({"event": "segment", "name": "autometa"})
    journal.append({"event": "start", "number": 0, "params": {"x": 0.5}})
    journal.append({"event": "end", "record": TrialRecord(0, {"x": 0.5}, "complete", [0.25]).to_dict()})
    journal.append({"event": "start", "number": 1, "params": {"x": 0.7}})
    with open(journal.path, "a") as handle:  # a kill in the middle of writing trial 1's end
        handle.write(json.dumps({"event": "end", "record": {"number": 1}})[:25])
    journal.append({"event": "start", "number": 2, "params": {"x": 0.9}})  # the resumed driver goes on
    ended, unfinished, segments = journal.read()
    assert list(ended) == [0] and ended[0].values == [0.25]
    assert unfinished == {1: {"x": 0.7}, 2: {"x": 0.9}} and segments == 1
    assert all(line.startswith("{") for line in journal.path.read_text().splitlines())


def test_reruns_keep_their_numbers_and_new_trials_follow_the_highest_known():
    numbering = _Numbering(first=1, reruns=[(3, {"x": 1.0}), (5, {"x": 2.0})], next_number=7)
    # Tune's searcher tags count from 1: "1_x=...", "2_...", ...
    assert [numbering.number(f"{i}_x=0.1") for i in range(1, 6)] == [3, 5, 7, 8, 9]
    assert numbering.params("2_x=0.1", {"x": 0.1}, None) == {"x": 2.0}
    random_search = _Numbering(first=0, reruns=[], next_number=0)
    assert [random_search.number(f"{i}_x=0.1") for i in range(3)] == [0, 1, 2]


def test_resuming_interrupted_trials_reruns_them_and_proposes_no_parameters_twice(local_ray, tmp_path):
    import autometa.search

    space = {"x": {"float": [-1.0, 1.0]}}
    fresh = autometa.search(lambda t: t.params["x"] ** 2, space, backend="ray", n_trials=2, sampler="random", seed=0)
    journal = Journal(tmp_path / "ray_trials.jsonl")  # a sweep killed while its first two trials ran
    journal.append({"event": "segment", "name": "autometa"})
    for t in fresh.trials:
        journal.append({"event": "start", "number": t.number, "params": t.params})
    result = autometa.search(lambda t: t.params["x"] ** 2, space, backend="ray", n_trials=4, sampler="random",
                             seed=0, out_dir=tmp_path, resume=True)
    assert [t.number for t in result.trials] == [0, 1, 2, 3] and all(t.state == "complete" for t in result.trials)
    assert [t.params for t in result.trials[:2]] == [t.params for t in fresh.trials]  # re-run as they were
    assert len({t.params["x"] for t in result.trials}) == 4, [t.params for t in result.trials]
