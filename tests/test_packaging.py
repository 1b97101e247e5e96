"""The project's own files: dependency lists agree, notebooks are clean, CI runs the tests."""

import re

import tomllib
import yaml

from .conftest import ROOT


def requirement_name(spec: str) -> str:
    return re.split(r"[<>=!~\[; ]", spec.strip(), maxsplit=1)[0].lower()


def test_environment_yml_lists_the_same_packages_as_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {requirement_name(s) for s in project["dependencies"]}
    declared |= {requirement_name(s) for s in project["optional-dependencies"]["dev"]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    listed = {requirement_name(s) for s in pip_section if not s.startswith("-e")}
    assert listed == declared


def test_one_tensorflow_package():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = [requirement_name(s) for s in project["dependencies"]]
    assert [n for n in names if n.startswith("tensorflow")] == ["tensorflow"]
    assert project["optional-dependencies"]["gpu"] == ["tensorflow[and-cuda]==2.21.*"]


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme.split("\n## ", 1)[0]
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_readme_documents_every_config_key():
    from transferlab.config import all_keys

    readme = (ROOT / "README.md").read_text()
    assert [key for key in all_keys() if f"`{key}`" not in readme] == []
