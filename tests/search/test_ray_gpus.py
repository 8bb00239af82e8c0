"""Fractional GPUs per Ray trial (``resources: {gpu: 0.5}`` in the space file), on a declared GPU."""

import os
import time

import pytest

import autometa.search
from autometa.errors import ConfigError
from autometa.search._space import load_space

pytest.importorskip("ray.tune")


def test_fractional_gpu_trials_share_the_declared_gpu(local_ray, tmp_path):
    if local_ray.cluster_resources().get("GPU", 0) < 1:
        pytest.skip("the running Ray declares no GPU")
    space_file = tmp_path / "space.yaml"
    space_file.write_text("x: {float: [0.0, 1.0]}\nresources: {cpu: 0.25, gpu: 0.5}\n")

    def objective(trial):
        import ray

        trial.set_user_attr("gpu", ray.get_runtime_context().get_assigned_resources().get("GPU"))
        trial.set_user_attr("visible", os.environ.get("CUDA_VISIBLE_DEVICES"))
        trial.set_user_attr("share", os.environ.get("AUTOMETA_GPU_SHARE"))  # caps the trial's vmap budget
        trial.set_user_attr("start", time.time())
        time.sleep(1.0)
        trial.set_user_attr("end", time.time())
        return trial.params["x"]

    result = autometa.search(objective, str(space_file), backend="ray", n_trials=4, sampler="random", seed=0)
    trials = result.trials
    assert [t.state for t in trials] == ["complete"] * 4
    assert result.info["resources"] == {"cpu": 0.25, "gpu": 0.5}
    assert all(t.user_attrs["gpu"] == 0.5 and t.user_attrs["visible"] == "0" and t.user_attrs["share"] == "0.5"
               for t in trials)
    # never more than two half-GPU trials at once on the one GPU (Ray would otherwise run all four: 2 CPUs)
    events = sorted([(t.user_attrs["start"], 1) for t in trials] + [(t.user_attrs["end"], -1) for t in trials])
    running, most = 0, 0
    for _, change in events:
        running += change
        most = max(most, running)
    assert most <= 2


def test_resources_in_the_space_file_are_checked(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("x: {float: [0.0, 1.0]}\nresources: {gpu: 1.5, cpu: -1}\n")
    with pytest.raises(ConfigError, match="number >= 0"):
        load_space(bad)
    bad.write_text("x: {float: [0.0, 1.0]}\nresources: {gpu: 1.5}\n")
    with pytest.raises(ConfigError, match="fraction of one GPU or whole GPUs"):
        load_space(bad)
    good = tmp_path / "good.yaml"
    good.write_text("x: {float: [0.0, 1.0]}\nresources: {cpu: 1, gpu: 0.25}\n")
    space = load_space(good)
    assert space.resources == {"cpu": 1, "gpu": 0.25} and space.names == ["x"]
