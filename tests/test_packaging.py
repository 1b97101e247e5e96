"""The project's own files: dependency lists agree, notebooks are clean, CI runs the tests."""

import re

import nbformat
import tomllib
import yaml
from packaging.requirements import Requirement

from transferlab.training.runtime import gpu_expected, missing_gpu_warning

from .conftest import ROOT


def requirement_name(spec: str) -> str:
    return re.split(r"[<>=!~\[; ]", spec.strip(), maxsplit=1)[0].lower()


def test_environment_yml_lists_the_same_packages_as_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {requirement_name(s) for s in project["dependencies"]}
    declared |= {requirement_name(s) for s in project["optional-dependencies"]["dev"]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    listed = {requirement_name(s) for s in pip_section if not s.startswith("-")}
    assert listed == declared
    # The same ranges, and the same tested versions as `make setup`.
    ranges = {Requirement(s).name: Requirement(s).specifier for s in project["dependencies"]}
    assert all(
        Requirement(s).specifier == ranges[Requirement(s).name]
        for s in pip_section
        if not s.startswith("-") and Requirement(s).name in ranges
    )
    assert "-c constraints.txt" in pip_section


def test_one_tensorflow_package():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = [requirement_name(s) for s in project["dependencies"]]
    assert [n for n in names if n.startswith("tensorflow")] == ["tensorflow"]
    tensorflow = next(s for s in project["dependencies"] if requirement_name(s) == "tensorflow")
    gpu = Requirement(project["optional-dependencies"]["gpu"][0])
    assert (gpu.name, gpu.extras, gpu.specifier) == (
        "tensorflow",
        {"and-cuda"},
        Requirement(tensorflow).specifier,
    )
    # One TensorFlow build: a tensorflow-cpu beside tensorflow would shadow its GPU support.
    builds = {"tensorflow-cpu", "tensorflow-gpu", "tensorflow-intel", "tensorflow-macos"}
    assert "tensorflow" in pinned_versions()
    assert builds.isdisjoint(pinned_versions())


# --- ranges in pyproject.toml, tested versions in constraints.txt -------------------------


def pinned_versions() -> dict[str, str]:
    """constraints.txt as {normalized name: version}."""
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


def test_tested_versions_satisfy_the_ranges():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = pinned_versions()
    for spec in project["dependencies"] + project["optional-dependencies"]["dev"]:
        requirement = Requirement(spec)
        assert requirement.name in pins, f"{requirement.name} has no tested version"
        assert requirement.specifier.contains(pins[requirement.name]), (spec, pins)


def test_tensorflow_and_keras_are_ranges_not_pins():
    # A pin would make pip replace a preinstalled TensorFlow (Colab's, with its GPU set-up).
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    ranges = {Requirement(s).name: Requirement(s).specifier for s in project["dependencies"]}
    assert str(ranges["tensorflow"]) == "<3,>=2.16"
    assert str(ranges["keras"]) == "<4,>=3.9"
    for older in ["2.16.2", "2.19.0", "2.21.0"]:
        assert ranges["tensorflow"].contains(older)
    assert not ranges["tensorflow"].contains("2.15.1")  # tf.keras is Keras 2 there


def test_make_setup_installs_the_pinned_versions():
    makefile = (ROOT / "Makefile").read_text()
    assert "-e '.[dev]' -c constraints.txt" in makefile
    assert "$(STAMP): pyproject.toml constraints.txt" in makefile


# --- Colab and other preinstalled runtimes ------------------------------------------------


def test_notebooks_install_plainly_in_colab_and_report_the_device_first():
    for path in sorted((ROOT / "notebooks").glob("0[1-6]_*.ipynb")):
        cells = nbformat.read(path, as_version=4).cells
        code = [c.source for c in cells if c.cell_type == "code"]
        install = next(i for i, source in enumerate(code) if "google.colab" in source)
        pip = [line.strip() for line in code[install].splitlines() if "pip install" in line]
        # No -U, no constraints, no [gpu]: any of them would replace Colab's TensorFlow.
        assert pip == ["!pip install -q -e /content/transferlab"], path.name
        assert "print(device_report())" in code[install + 1], path.name
        assert "device_report" not in "".join(code[: install + 1]), path.name


def test_a_colab_gpu_runtime_or_an_nvidia_driver_means_a_gpu_was_chosen(tmp_path):
    no_driver = tmp_path / "none"
    driver = tmp_path / "version"
    driver.write_text("NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.15\n")
    assert gpu_expected({"COLAB_GPU": "1"}, no_driver) == "this is a Colab GPU runtime"
    assert gpu_expected({}, driver) == "this machine has an NVIDIA driver loaded"
    # Colab's CPU and TPU runtimes set COLAB_GPU to 0 or leave it empty.
    assert gpu_expected({"COLAB_GPU": "0"}, no_driver) is None
    assert gpu_expected({"COLAB_GPU": ""}, no_driver) is None


def test_a_chosen_gpu_that_tensorflow_cannot_see_is_a_warning_with_the_fix():
    colab = "this is a Colab GPU runtime"
    assert missing_gpu_warning(True, colab, True, {}) is None
    assert missing_gpu_warning(False, None, True, {}) is None  # a CPU machine: nothing to say
    lost = missing_gpu_warning(False, colab, True, {})
    assert lost.startswith(f"{colab}, but TensorFlow sees no GPU, so this run will use the CPU")
    assert "Disconnect and delete runtime" in lost
    assert "built without CUDA" in missing_gpu_warning(False, colab, False, {})
    hidden = missing_gpu_warning(False, colab, True, {"CUDA_VISIBLE_DEVICES": "-1"})
    assert "CUDA_VISIBLE_DEVICES hides every GPU" in hidden


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme.split("\n## ", 1)[0]
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_readme_documents_every_config_key():
    from transferlab.config import all_keys

    readme = (ROOT / "README.md").read_text()
    assert [key for key in all_keys() if f"`{key}`" not in readme] == []
