"""The test suite catches planted bugs: each mutation below makes the value tests fail.

Each mutation is an exact source-text replacement in one file of a temporary copy of the
``autometa`` package; ``tests/learners/test_values.py`` then runs against that copy in a
subprocess, with the default run's marker selection (not slow, not gpu), and must fail (pytest
exit code 1: a test failed, not a collection error). A control
run without mutation must pass, so a failure is the mutation's doing.

After a refactor moves the code a mutation targets, its snippet no longer matches and the test
fails with "mutation X no longer applies; update its snippet": update ``MUTATIONS`` (never
delete an entry without planting the same bug elsewhere).
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import autometa

PACKAGE = Path(autometa.__file__).resolve().parent
VALUE_TESTS = Path(__file__).resolve().parent / "learners" / "test_values.py"

#: name -> (file inside the package, exact original text, replacement, what it plants)
MUTATIONS: dict[str, tuple[str, str, str, str]] = {
    "metasgd_rates_twice": (
        "slots/optimizer/_learned.py",
        "new[k] = p - (self.lrs[_key(k)] if lr is None else lr) * grads[k]",
        "new[k] = p - 2 * (self.lrs[_key(k)] if lr is None else lr) * grads[k]",
        "Meta-SGD uses twice its learned rates",
    ),
    "imaml_halved": (
        "hypergrad/_estimators.py",
        "solution, leaves, self.method, self.iterations, self.alpha)\n",
        "solution, leaves, self.method, self.iterations, self.alpha)\n"
        "        grads = {k: g / 2 for k, g in grads.items()}\n",
        "iMAML's meta-gradient halved",
    ),
    "eval_inner_steps_ignored": (
        "learners/_gradient.py",
        "self.eval_inner_steps = eval_inner_steps or inner_steps",
        "self.eval_inner_steps = inner_steps",
        "evaluate() ignores eval_inner_steps",
    ),
    "anil_first_order": (
        "learners/_gradient.py",
        '                              f"has none; use a network with a `head` submodule (Conv4, MLP).")\n'
        "        super().__init__(model, **kwargs)",
        '                              f"has none; use a network with a `head` submodule (Conv4, MLP).")\n'
        '        kwargs["first_order"] = True\n'
        "        super().__init__(model, **kwargs)",
        "ANIL silently first order",
    ),
    "eval_lr_doubled": (
        "learners/_gradient.py",
        "        return self.estimator(self.problem(support_x, support_y, query_x, query_y), meta, training, steps)",
        "        problem = self.problem(support_x, support_y, query_x, query_y)\n"
        "        if not training:\n"
        "            update = problem.update\n"
        "            problem.update = lambda g, s, p, m: update({k: 2 * v for k, v in g.items()}, s, p, m)\n"
        "        return self.estimator(problem, meta, training, steps)",
        "evaluate() adapts with twice the inner learning rate",
    ),
    "maml_inner_first_order": (
        "hypergrad/_estimators.py",
        "params = solve(problem, meta, steps, self.first_order, self.checkpoint)",
        "params = solve(problem, meta, steps, True, self.checkpoint)",
        "MAML's inner loop always first order",
    ),
    "reptile_sign": (
        "hypergrad/_estimators.py",
        "grads = {problem.init_keys[n]: start[n] - adapted[n] for n in start}",
        "grads = {problem.init_keys[n]: adapted[n] - start[n] for n in start}",
        "Reptile moves away from the adapted weights",
    ),
    "protonet_distance_not_squared": (
        "learners/_metric.py",
        "return (a[:, None, :] - b[None, :, :]).pow(2).sum(-1)",
        "return (a[:, None, :] - b[None, :, :]).pow(2).sum(-1).sqrt()",
        "ProtoNet's Euclidean distance not squared",
    ),
}


def run_value_tests(root: Path) -> subprocess.CompletedProcess:
    """Run the value tests against the ``autometa`` package under ``root``, isolated from this repo."""
    shutil.copy(VALUE_TESTS, root / "test_values.py")
    (root / "pytest.ini").write_text("[pytest]\naddopts = -p no:cacheprovider\n")
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1"}
    # exit code 3 (not pytest's 1) when another autometa than the copy would be tested
    check = ("import autometa, pathlib, sys\n"
             f"if pathlib.Path(autometa.__file__).resolve().parent != pathlib.Path({str(root / 'autometa')!r}):\n"
             "    print('the copy was not imported: ' + autometa.__file__); sys.exit(3)")
    # the default run's selection (pyproject's addopts): a value test marked slow would not guard it
    selection = "['-q', '-x', '-m', 'not slow and not gpu', 'test_values.py']"
    command = f"{check}\nimport pytest; sys.exit(pytest.main({selection}))"
    return subprocess.run([sys.executable, "-c", command], cwd=root, env=env, capture_output=True,
                          text=True, timeout=300)


def copy_package(tmp_path: Path) -> Path:
    shutil.copytree(PACKAGE, tmp_path / "autometa", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def test_value_tests_pass_on_the_unmutated_copy(tmp_path):
    result = run_value_tests(copy_package(tmp_path))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def plant(root: Path, name: str, mutation: tuple[str, str, str, str]) -> None:
    """Apply one mutation to the copy under ``root``; fail the test if its snippet is stale."""
    relative, original, mutated, what = mutation
    path = root / "autometa" / relative
    source = path.read_text() if path.is_file() else ""
    if source.count(original) != 1:
        pytest.fail(f"mutation {name} ({what}) no longer applies; update its snippet in "
                    f"tests/test_mutations.py (found {source.count(original)} times in {relative})")
    path.write_text(source.replace(original, mutated))


def test_a_stale_snippet_fails_loudly(tmp_path):
    (tmp_path / "autometa").mkdir()
    (tmp_path / "autometa" / "_gradient.py").write_text("return rates\n")
    stale = r"mutation stale \(a refactored line\) no longer applies; update its snippet"
    with pytest.raises(pytest.fail.Exception, match=stale):
        plant(tmp_path, "stale", ("_gradient.py", "return 2 * rates", "return rates", "a refactored line"))
    with pytest.raises(pytest.fail.Exception, match="found 0 times in moved.py"):
        plant(tmp_path, "moved", ("moved.py", "x", "y", "a moved file"))


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_mutation_is_caught(name, tmp_path):
    what = MUTATIONS[name][3]
    root = copy_package(tmp_path)
    plant(root, name, MUTATIONS[name])
    result = run_value_tests(root)
    output = result.stdout[-3000:] + result.stderr[-3000:]
    assert result.returncode != 0, f"the value tests did not catch: {what}"
    assert result.returncode == 1, f"{what}: expected failing tests, got exit code {result.returncode}\n{output}"
