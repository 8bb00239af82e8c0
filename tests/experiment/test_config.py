"""Config reading and validation: one grammar for every section, YAML 1.2 numbers, clear errors."""

import pytest
import yaml

from autometa.errors import ConfigError
from autometa.experiment import load_config
from autometa.experiment._config import load_yaml, parse_overrides

SINE = {"tasks": {"name": "sinusoid"}, "model": {"name": "mlp", "hidden": [8]},
        "learner": {"name": "maml", "inner_lr": 0.01}}


@pytest.mark.parametrize("text, value", [
    ("1e-3", 0.001), ("1E5", 1e5), ("-2e+2", -200.0), ("1.0e-3", 0.001), (".5", 0.5), ("3", 3),
    ("[1e-3, 2]", [0.001, 2]), ("1e", "1e"), ("1.5.3", "1.5.3"), ("abc", "abc"), ("true", True),
])
def test_yaml_numbers_are_read_as_yaml_1_2_does(text, value):
    got = load_yaml(text)
    assert got == value and type(got) is type(value)


def test_scientific_notation_in_files_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(SINE) + "outer: {lr: 1e-3}\n")
    assert load_config(path)["outer"]["lr"] == 0.001
    assert load_config(SINE, ["outer.lr=2e-4"])["outer"]["lr"] == 0.0002
    assert parse_overrides(["learner.inner_lr=1E-2"]) == {"learner": {"inner_lr": 0.01}}


@pytest.mark.parametrize("override, fragments", [
    ("tasks.shot=5", ["'shot'", "did you mean 'shots'"]),
    ("model.hiden=[10]", ["'hiden'", "did you mean 'hidden'"]),
    ("model.name=mpl", ["'mpl'", "did you mean 'mlp'"]),
    ("tasks.name=sinusoidd", ["'sinusoidd'", "did you mean 'sinusoid'"]),
    ("run.device=banana", ["'banana'", "use cpu"]),
    ("run.device=cuda:7", ["'cuda:7'", "run.device=cpu"]),
])
def test_section_typos_fail_before_anything_runs(override, fragments):
    with pytest.raises(ConfigError) as info:
        load_config(SINE, [override])
    for fragment in fragments:
        assert fragment in str(info.value)


def test_model_without_name_is_checked_against_every_network():
    with pytest.raises(ConfigError, match="did you mean 'hidden'"):
        load_config({**SINE, "model": {"hiden": [8]}})
    assert load_config({**SINE, "model": {"hidden": [8]}})["model"] == {"hidden": [8]}


def test_every_problem_in_one_error_naming_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    bad = {**SINE, "tasks": {"name": "sinusoid", "shot": 5}, "model": {"name": "mlp", "hiden": [8]},
           "outer": {"lr": -1}, "run": {"device": "banana"}}
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message
    for fragment in ("'shot'", "'hiden'", "outer.lr", "'banana'"):
        assert fragment in message


def test_a_directory_is_not_a_config(tmp_path):
    with pytest.raises(ConfigError, match="is a directory, pass a YAML file"):
        load_config(tmp_path)


def test_bad_model_argument_types_are_config_errors():
    from autometa.experiment import build_experiment

    config = load_config({**SINE, "model": {"name": "mlp", "hidden": "wide"}})
    with pytest.raises(ConfigError, match="hidden"):
        build_experiment(config)


def test_a_run_reports_typos_and_bad_learner_values_in_one_error(tmp_path):
    from autometa.experiment import run_experiment

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(SINE))
    with pytest.raises(ConfigError) as info:
        run_experiment(str(path), tmp_path / "out", overrides=["tasks.shot=5", "model.hiden=[3]",
                                                              "learner.inner_lr=-1", "run.device=banana"])
    message = str(info.value)
    assert str(path) in message
    for fragment in ("'shot'", "'hiden'", "inner_lr", "'banana'"):
        assert fragment in message
    assert not (tmp_path / "out").exists()  # nothing written for an invalid config


@pytest.mark.parametrize("override, fragment", [
    ("outer=3", "outer must be a mapping"), ("run=[1]", "run must be a mapping"), ("tasks=3", "tasks must be"),
    ("outer.optimzer=sgd", "did you mean 'optimizer'"), ("sed=1", "did you mean 'seed'"),
])
def test_sections_of_the_wrong_shape_are_config_errors(override, fragment, tmp_path):
    from autometa.experiment import run_experiment

    with pytest.raises(ConfigError, match=fragment):
        run_experiment(SINE, tmp_path / "out", overrides=[override])
