import subprocess
import sys
from pathlib import Path

import pytest

from autometa.errors import ConfigError
from autometa.search import SearchSpace, apply_params, load_space, parse_space

ROOT = Path(__file__).resolve().parents[2]
CONFIG = {
    "seed": 0,
    "tasks": {"name": "sinusoid", "shots": 5},
    "model": {"name": "mlp", "hidden": [16, 16]},
    "learner": {"name": "maml", "inner_lr": 0.01},
    "outer": {"optimizer": "adam", "lr": 0.001},
}


def test_nested_and_dotted_names_give_the_same_space():
    nested = parse_space({"learner": {"inner_lr": {"float": [1e-3, 1.0], "log": True}, "inner_steps": {"int": [1, 5]}}})
    dotted = parse_space({"learner.inner_lr": {"float": [1e-3, 1.0], "log": True},
                          "learner.inner_steps": {"int": [1, 5]}})
    assert nested.to_dict() == dotted.to_dict()
    assert nested["learner.inner_lr"].log and nested["learner.inner_steps"].kind == "int"
    assert parse_space(nested.to_dict()).to_dict() == nested.to_dict()


def test_conditions_are_ordered_after_what_they_read_and_prune_inactive_values():
    space = parse_space({
        "optimizer.lr": {"float": [1e-4, 1e-1], "log": True, "when": {"optimizer": ["SGD", "Adam"]}},
        "optimizer.hidden": {"int": [8, 64], "when": {"optimizer": ["LSTMOptimizer"]}},
        "optimizer": {"choice": ["SGD", "Adam", "LSTMOptimizer"]},
    })
    assert space.names[0] == "optimizer" and space.conditional
    values = {"optimizer": "Adam", "optimizer.lr": 0.01, "optimizer.hidden": 32}
    assert space.prune(values) == {"optimizer": "Adam", "optimizer.lr": 0.01}
    space.check_values({"optimizer": "LSTMOptimizer", "optimizer.hidden": 32})
    with pytest.raises(ConfigError, match="'optimizer.hidden' is missing"):
        space.check_values({"optimizer": "LSTMOptimizer"})


def test_every_problem_of_a_space_is_reported_in_one_error():
    raw = {
        "a": {"float": [1.0, 0.1]},                       # low > high
        "b": {"normal": [0, 1]},                           # unknown distribution
        "c": {"float": [0.0, 1.0], "log": True},           # log range through 0
        "d": {"int": [1, 5], "when": {"nope": [1]}},       # when names a missing parameter
        "e": {"choice": []},                               # empty choice
        "f": {"int": [1, 4], "when": {"e2": ["z"]}},       # when lists an impossible value
        "e2": {"choice": ["x", "y"]},
        "g": {"float": [0, 1], "sep": 0.1},                # unknown option
        "h": {"int": [1.5, 3]},                            # ints need integer bounds
        "i": {"choice": ["p"], "when": {"j": ["p"]}},      # circular conditions
        "j": {"choice": ["p"], "when": {"i": ["p"]}},
        "k": {"float": [0.1, 1.0], "log": True, "step": 0.1},  # step with log
    }
    with pytest.raises(ConfigError) as info:
        parse_space(raw)
    message = str(info.value)
    for expected in ["'a': low > high", "'b': unknown distribution", "'c': a log-scale range needs low > 0",
                     "'d': `when` refers to 'nope'", "'e': `choice` needs a non-empty list",
                     "'f': `when` lists ['z'] for 'e2'", "'g': unknown option(s) ['sep']",
                     "'h': `int` needs [low, high] as two integers", "circular `when` conditions",
                     "'k': `step` and `log` cannot be combined"]:
        assert expected in message, expected
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("raw", [None, {}, [1, 2], "x"])
def test_a_space_that_is_not_a_mapping_is_refused(raw):
    with pytest.raises(ConfigError, match="non-empty mapping"):
        parse_space(raw)


def test_names_the_experiment_config_does_not_have_are_reported_together():
    space = parse_space({
        "learner.inner_lr": {"float": [1e-3, 1.0]},         # set in the config
        "learner.inner_steps": {"int": [1, 3]},             # a MAML constructor argument
        "learner.warp": {"float": [0.0, 1.0]},              # not a MAML argument
        "optimiser.lr": {"float": [1e-4, 1e-2]},            # no such section
        "model.depth": {"int": [1, 3]},                     # section without that key
    })
    with pytest.raises(ConfigError) as info:
        space.check_config(CONFIG)
    message = str(info.value)
    assert "'learner.warp'" in message and "'optimiser.lr'" in message and "'model.depth'" in message
    assert "inner_lr" not in message.split("\n")[0] and "'learner.inner_steps'" not in message


def test_a_learner_choice_must_name_registered_learners():
    with pytest.raises(ConfigError, match="unknown learner"):
        parse_space({"learner": {"choice": ["maml", "warpgrad"]}}).check_config(CONFIG)
    parse_space({"learner": {"choice": ["maml", "metasgd"]}}).check_config(CONFIG)


def test_apply_params_sets_nested_keys_and_swaps_the_filler_name():
    out = apply_params(CONFIG, {"learner": "metasgd", "learner.inner_lr": 0.1, "outer.lr": 0.01})
    assert out["learner"] == {"name": "metasgd", "inner_lr": 0.1}
    assert out["outer"]["lr"] == 0.01 and CONFIG["learner"]["name"] == "maml"


def test_grid_values_of_discrete_parameters():
    space = parse_space({"n": {"int": [2, 8], "step": 3}, "x": {"float": [0.0, 1.0], "step": 0.25},
                         "c": {"choice": ["a", "b"]}})
    assert space["n"].grid() == [2, 5, 8]
    assert space["x"].grid() == [0.0, 0.25, 0.5, 0.75, 1.0]
    with pytest.raises(ConfigError, match="has no `step`"):
        parse_space({"y": {"float": [0.0, 1.0]}})["y"].grid()


@pytest.mark.parametrize("path", sorted((ROOT / "autometa" / "search_spaces").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_search_spaces_load(path):
    space = load_space(path)
    assert len(space) >= 2


def test_shipped_spaces_fit_the_configs_they_are_written_for():
    config = dict(CONFIG, learner={"name": "maml", "inner_lr": 0.01})
    load_space("maml_sinusoid").check_config(config)
    load_space("search_spaces/handcrafted_vs_metasgd.yaml").check_config(config)


def test_a_yaml_file_error_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("x: {float: [2, 1]}\n")
    with pytest.raises(ConfigError, match="(?s)bad.yaml.*low > high"):
        load_space(path)
    with pytest.raises(ConfigError, match="does not exist"):
        SearchSpace.coerce(tmp_path / "missing.yaml")


def test_importing_autometa_and_search_loads_no_backend():
    code = ("import sys, autometa, autometa.search; "
            "print(sorted(m for m in ('optuna', 'ray', 'nni') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_shipped_spaces_are_package_data_and_load_by_name(tmp_path, monkeypatch):
    """The wheel ships autometa/search_spaces (pyproject's package-data) and load_space finds them by name
    from any directory."""
    import tomllib

    from autometa.search._space import SHIPPED, shipped_spaces

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["autometa"]
    for pattern in patterns:  # every advertised folder exists and is not empty
        assert list((ROOT / "autometa").glob(pattern)), pattern
    assert SHIPPED == ROOT / "autometa" / "search_spaces" and "maml_sinusoid" in shipped_spaces()
    monkeypatch.chdir(tmp_path)
    assert load_space("maml_sinusoid").names == load_space(SHIPPED / "maml_sinusoid.yaml").names
    with pytest.raises(ConfigError, match="maml_sinusoid"):
        load_space("no_such_space")
