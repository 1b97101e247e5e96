import subprocess
import sys

from transferlab.cli import main

from .conftest import ROOT


def test_prepare_data_stage(cfg, capsys):
    code = main(
        [
            "prepare-data",
            "--config",
            str(ROOT / "configs/demo.yaml"),
            "--set",
            f"output_dir={cfg.output_dir}",
        ]
    )
    assert code == 0
    assert "digits: 10 classes; train 1257, val 270, test 270" in capsys.readouterr().out


def test_typo_in_set_is_a_clear_error(capsys):
    code = main(
        ["prepare-data", "--config", str(ROOT / "configs/demo.yaml"), "--set", "phase1.epoch=2"]
    )
    assert code == 1
    assert "did you mean 'phase1.epochs'" in capsys.readouterr().err


def test_make_help_is_the_default_target():
    out = subprocess.run(
        ["make", "-s"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    for target in ["setup", "test", "lint", "demo", "train-phase1", "report", "bench", "clean"]:
        assert target in out


def test_module_entry_point_rejects_unknown_stage():
    result = subprocess.run(
        [sys.executable, "-m", "transferlab", "train-phase3"], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "invalid choice: 'train-phase3'" in result.stderr
