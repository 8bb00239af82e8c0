"""A filler written outside the package (examples/clipped_sgd.py) plugs into run, sweep and compare."""

import json
from pathlib import Path

import pytest
import torch
import yaml

from autometa.cli import main
from autometa.learners import MAML
from autometa.nets import MLP
from autometa.testing import check_filler

EXAMPLE = Path(__file__).parents[1] / "examples" / "clipped_sgd.py"
CONFIG = {
    "tasks": {"name": "sinusoid", "shots": 5, "queries": 5},
    "model": {"name": "mlp", "hidden": [8]},
    "learner": {"name": "maml", "optimizer": {"name": "clipped_sgd", "lr": 0.05, "max_norm": 0.5}},
    "outer": {"meta_batch": 2, "steps": 3},
    "run": {"validate_every": 3, "val_tasks": 4, "test_tasks": 6, "eval_batch": 6, "progress": False},
}


@pytest.fixture(scope="module")
def example():
    """The example imported as a plugin; autometa's registries are restored afterwards."""
    from autometa import _plugins
    from autometa.slots import FILLERS

    saved_fillers, saved_loaded = dict(FILLERS["optimizer"]), dict(_plugins._LOADED)
    yield _plugins.load_plugin(EXAMPLE)
    FILLERS["optimizer"].clear()
    FILLERS["optimizer"].update(saved_fillers)
    _plugins._LOADED.clear()
    _plugins._LOADED.update(saved_loaded)


@pytest.fixture
def unregistered(monkeypatch):
    """Neither registered nor imported: only the command's --plugin can make clipped_sgd known."""
    from autometa import _plugins
    from autometa.slots import FILLERS

    # fresh copies: what the command registers is dropped after the test, so other tests never see it
    monkeypatch.setitem(FILLERS, "optimizer", {k: v for k, v in FILLERS["optimizer"].items() if k != "clipped_sgd"})
    monkeypatch.setattr(_plugins, "_LOADED", {})


def write(path: Path, content: dict) -> str:
    path.write_text(yaml.safe_dump(content))
    return str(path)


def test_example_passes_the_filler_conformance_suite(example):
    check_filler(lambda: example.ClippedSGD(lr=0.1, max_norm=1.0),
                 reference=example.clipped_sgd_reference(lr=0.1, max_norm=1.0), backends=("optuna",))
    # the suite can fail: a rule that forgets to clip is not the plain-torch clipped SGD
    with pytest.raises(AssertionError, match="vs reference"):
        check_filler(lambda: example.ClippedSGD(lr=0.1, max_norm=1e6),
                     reference=example.clipped_sgd_reference(lr=0.1, max_norm=1.0), backends=())


def test_example_clips_inside_maml_and_rejects_bad_values(example):
    learner = MAML(MLP(1, 1, (4,)), optimizer=example.ClippedSGD(lr=0.1, max_norm=1e-3), task="regression")
    x, y = torch.linspace(-1, 1, 5)[:, None], torch.ones(5, 1)
    start = {k: v.detach() for k, v in learner.model.named_parameters()}
    adapted = learner.adapt(x, y, steps=1)
    moved = torch.sqrt(sum(((adapted[k] - start[k]) ** 2).sum() for k in start))
    assert moved.item() == pytest.approx(0.1 * 1e-3, rel=1e-3)  # lr * max_norm: the step was clipped
    with pytest.raises(ValueError, match="max_norm"):
        example.ClippedSGD(max_norm=0)


def test_run_with_plugin_uses_the_users_filler(tmp_path, capsys, unregistered):
    out = tmp_path / "run"
    assert main(["run", write(tmp_path / "c.yaml", CONFIG), "--plugin", str(EXAMPLE), "--out", str(out)]) == 0
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["learner"]["optimizer"]["name"] == "clipped_sgd"
    assert json.loads((out / "results.json").read_text())["steps"] == 3
    assert main(["run", str(tmp_path / "c.yaml"), "--plugin", str(tmp_path / "missing.py")]) == 2
    assert "not a .py file" in capsys.readouterr().err


def test_sweep_searches_the_users_filler_space(tmp_path, unregistered):
    space = write(tmp_path / "space.yaml", {"learner.optimizer.max_norm": {"float": [0.1, 10.0], "log": True}})
    out = tmp_path / "sweep"
    code = main(["sweep", write(tmp_path / "c.yaml", CONFIG), "--space", space, "--trials", "2",
                 "--plugin", str(EXAMPLE), "--out", str(out)])
    assert code == 0
    text = "".join(p.read_text() for p in out.rglob("*.json"))
    assert "max_norm" in text


def test_compare_workers_import_the_plugin(tmp_path, unregistered):
    base = {k: v for k, v in CONFIG.items() if k != "learner"}
    base["learner"] = {"name": "maml"}
    comparison = {"seeds": [0], "comparisons": [{
        "name": "clip", "slot": "optimizer", "metric": "loss", "reference": "sgd", "base": base,
        "fillers": {"sgd": {"kind": "hand-crafted", "filler": {"name": "sgd", "lr": 0.05}},
                    "clipped": {"kind": "hand-crafted", "filler": {"name": "clipped_sgd", "lr": 0.05,
                                                                    "max_norm": 0.5}}}}]}
    out = tmp_path / "cmp"
    code = main(["compare", write(tmp_path / "cmp.yaml", comparison), "--plugin", str(EXAMPLE), "--out", str(out),
                 "--quiet", "--workers", "1"])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert set(report["comparisons"][0]["fillers"]) == {"sgd", "clipped"}
