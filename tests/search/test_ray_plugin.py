"""Ray's trial workers import the command's --plugin files, as compare's workers do."""

import json
from pathlib import Path

import yaml

from autometa.cli import main

EXAMPLE = Path(__file__).parents[2] / "examples" / "clipped_sgd.py"
CONFIG = {
    "tasks": {"name": "sinusoid", "shots": 5, "queries": 5},
    "model": {"name": "mlp", "hidden": [8]},
    "learner": {"name": "maml", "optimizer": {"name": "clipped_sgd", "lr": 0.05, "max_norm": 0.5}},
    "outer": {"meta_batch": 2, "steps": 2},
    "run": {"validate_every": 2, "val_tasks": 4, "test_tasks": 4, "eval_batch": 4, "progress": False},
}


def test_ray_trials_build_the_plugins_filler(tmp_path, local_ray, monkeypatch):
    from autometa import _plugins
    from autometa.slots import FILLERS

    # the driver forgets what the command registers; a Ray worker only knows it through the plugin
    monkeypatch.setitem(FILLERS, "optimizer", {k: v for k, v in FILLERS["optimizer"].items() if k != "clipped_sgd"})
    monkeypatch.setattr(_plugins, "_LOADED", {})
    config, space = tmp_path / "c.yaml", tmp_path / "space.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    space.write_text(yaml.safe_dump({"learner.optimizer.max_norm": {"float": [0.1, 10.0], "log": True}}))
    out = tmp_path / "sweep"
    code = main(["sweep", str(config), "--space", str(space), "--trials", "2", "--backend", "ray",
                 "--plugin", str(EXAMPLE), "--out", str(out)])
    assert code == 0
    sweep = json.loads((out / "sweep.json").read_text())
    states = [t["state"] for t in sweep["trials"]]
    assert states == ["complete", "complete"], sweep["trials"]
