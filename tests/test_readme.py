"""The README's test command is exactly what CI runs, and its Quickstart names the main job."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_exactly_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    install, _, command = [ln for ln in readme.splitlines() if "python -m pytest" in ln][0].partition(" && AUTOMETA")
    command = "AUTOMETA" + command
    assert command.startswith("AUTOMETA_DATA=../shared/data python -m pytest")
    assert command in ci.splitlines()
    assert "autometa compare" in readme.split("## Quickstart")[1].split("##")[0]
    assert "pip install -q torch==2.13.0" in ci and "-e '.[test,ray,nni,rl]'" in ci
