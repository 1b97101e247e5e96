"""Every notebook, executed by papermill in the registered kernel on tiny parameters."""

import json
import re

import nbformat
import pandas as pd
import pytest

from transferlab.config import load_config
from transferlab.notebooks import KERNEL_NAME, NotebookFailed, run_notebook
from transferlab.stages import STAGES

from .conftest import ROOT

NOTEBOOK_STAGES = [name for name, stage in STAGES.items() if stage.notebook]

DEMO = str(ROOT / "configs" / "demo.yaml")
# Not a stage's notebook: it runs lr-find, sweep, cv and compare in turn.
EXPERIMENTS = "08_experiments.ipynb"


def tiny_overrides(root):
    return (
        f"output_dir={root}/outputs models_dir={root}/models checkpoints_dir={root}/checkpoints "
        f"report.output_dir={root}/reports data.subset_per_class=40 "
        # The notebooks' plumbing, not ResNet50, is under test: the small backbone keeps
        # each stage's kernel quick (Grad-CAM then takes the backbone table's layer).
        "model.backbone=small_resnet model.image_size=32 eval.gradcam_layer=null "
        "phase1.epochs=2 phase2.epochs=1 train.batch_size=32 eval.gradcam_images=4 "
        f"predict.data={root}/photos predict.gradcam_images=2 "
        "lr_find.steps=20 lr_find.seeds=1 sweep.trials=2 cv.folds=2"
    )


def write_photos(folder):
    """Three new photos of digits-like pixels and one file that is no image."""
    import numpy as np

    from .conftest import write_image

    rng = np.random.default_rng(5)
    for i in range(3):
        write_image(folder / f"photo_{i}.png", rng.integers(0, 255, (16, 12, 3), dtype=np.uint8))
    (folder / "notes.jpg").write_text("not a photo")


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """Run every notebook in order, as `make demo` does, into one tmp project."""
    root = tmp_path_factory.mktemp("project")
    write_photos(root / "photos")
    paths = {
        target: run_notebook(target, DEMO, tiny_overrides(root), ROOT / "notebooks")
        for target in NOTEBOOK_STAGES
    }
    return root, paths


def test_notebooks_are_stored_clean_with_a_parameters_cell():
    for name in [STAGES[target].notebook for target in NOTEBOOK_STAGES] + [EXPERIMENTS]:
        nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(not c.outputs and c.execution_count is None for c in code), name
        tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, name
        # The parameters cell is plain values: it runs as Python where tags are unknown.
        exec(compile(tagged[0].source, name, "exec"), {})
        assert not any(re.search(r"^\s*def ", c.source, re.M) for c in code), name


def test_each_executed_notebook_lands_in_its_run_dir(executed):
    root, paths = executed
    for target, path in paths.items():
        assert path.is_file(), target
        assert path.parent.name == "notebooks"
        assert path.parents[2] == root / "outputs" / "runs"
        assert path.parents[1].name.endswith(f"_demo_{STAGES[target].run_kind}")
        nb = nbformat.read(path, as_version=4)
        injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
        assert "phase1.epochs=2" in injected[0].source


def test_training_notebooks_recorded_their_epochs(executed):
    root, paths = executed
    phase1 = pd.read_csv(paths["train-phase1"].parents[1] / "metrics.csv")
    phase2 = pd.read_csv(paths["train-phase2"].parents[1] / "metrics.csv")
    assert phase1["epoch"].tolist() == [1, 2]
    assert phase2["epoch"].tolist() == [1]
    assert phase1["val_accuracy"].between(0, 1).all()
    assert (root / "models" / "demo_phase1_best.keras").is_file()
    # Phase 2 writes its own best model only when it beats phase 1's; its summary says.
    summary = json.loads((paths["train-phase2"].parents[1] / "summary.json").read_text())
    phase2_model = root / "models" / "demo_phase2_best.keras"
    assert phase2_model.is_file() == (not summary["kept_phase1"])
    assert (paths["train-phase1"].parents[1] / "figures" / "training_curves.png").stat().st_size > 0


def test_evaluation_and_gradcam_notebooks_wrote_metrics_and_figures(executed):
    _, paths = executed
    run_dir = paths["evaluate"].parents[1]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    predictions = pd.read_csv(run_dir / "predictions.csv")
    assert metrics["accuracy"] == pytest.approx(
        (predictions["true_label"] == predictions["predicted_label"]).mean()
    )
    figures = list((run_dir / "figures").glob("*.png"))
    assert len(figures) >= 4 and all(f.stat().st_size > 0 for f in figures)
    gradcam_figures = list((paths["gradcam"].parents[1] / "figures").glob("*.png"))
    assert gradcam_figures and all(f.stat().st_size > 0 for f in gradcam_figures)


def test_predict_notebook_classified_the_photos_and_listed_the_unreadable(executed):
    root, paths = executed
    run_dir = paths["predict"].parents[1]
    predictions = pd.read_csv(run_dir / "predictions.csv", dtype=str)
    assert sorted(predictions["path"].map(lambda p: p.rsplit("/", 1)[-1])) == [
        "photo_0.png",
        "photo_1.png",
        "photo_2.png",
    ]
    assert {"predicted_class", "confidence", "class_1", "prob_1", "class_3", "prob_3"} <= set(
        predictions.columns
    )
    skipped = pd.read_csv(run_dir / "skipped.csv")
    assert skipped["path"].str.endswith("notes.jpg").tolist() == [True]
    page = (run_dir / "predictions.md").read_text()
    assert "3 photo(s) classified, 1 skipped" in page and "notes.jpg" in page
    assert (run_dir / "figures" / "gradcam_named.png").stat().st_size > 0


def test_report_notebook_wrote_a_report_whose_links_exist(executed):
    root, _ = executed
    reports = sorted((root / "reports").glob("*.md"))
    assert reports
    text = reports[-1].read_text()
    links = re.findall(r"\]\(([^)#]+)\)", text)
    assert links
    for link in links:
        assert (reports[-1].parent / link).exists(), link


def test_bad_parameter_fails_with_the_library_message(tmp_path):
    with pytest.raises(NotebookFailed) as failure:
        run_notebook(
            "train-phase1",
            DEMO,
            tiny_overrides(tmp_path),
            ROOT / "notebooks",
            extra_parameters={"epochs": "three"},
        )
    executed_copy = failure.value.path
    assert executed_copy.is_file() and executed_copy.parent.name == "notebooks"
    outputs = json.dumps(nbformat.read(executed_copy, as_version=4).cells)
    assert "phase1.epochs='three' must be a whole number" in outputs


def test_a_killed_kernel_is_explained_in_plain_words(tmp_path):
    """A kernel the system kills (as the OOM killer does) names the stage and what to lower."""
    folder = tmp_path / "notebooks"
    folder.mkdir()
    dying = nbformat.v4.new_notebook(
        metadata={"kernelspec": {"name": "transferlab", "language": "python", "display_name": "t"}}
    )
    parameters = nbformat.v4.new_code_cell('config = ""\noverrides = ""')
    parameters.metadata["tags"] = ["parameters"]
    dying.cells = [
        parameters,
        nbformat.v4.new_code_cell("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)"),
    ]
    nbformat.write(dying, folder / STAGES["evaluate"].notebook)
    with pytest.raises(NotebookFailed) as failure:
        run_notebook("evaluate", DEMO, tiny_overrides(tmp_path), folder)
    message = str(failure.value)
    assert "the evaluate stage stopped" in message and "kernel" in message
    assert "ran out of memory" in message and "eval.tta=0" in message
    assert "DeadKernelError" not in message


def test_experiments_notebook_finds_sweeps_cross_validates_and_compares(executed):
    """08_experiments.ipynb on the executed project: lr finder, sweep, k-fold, compare."""
    from transferlab.evaluation import evaluate

    root, paths = executed
    cfg = load_config(DEMO, tiny_overrides(root))
    # A second evaluate run of phase 1's model on the same test images, to compare with.
    first = paths["evaluate"].parents[1]
    second = evaluate(cfg, model_path=root / "models" / "demo_phase1_best.keras").run_dir
    path = run_notebook(
        "compare",
        DEMO,
        tiny_overrides(root),
        ROOT / "notebooks",
        extra_parameters={"runs": [first.name, second.name]},
        notebook=EXPERIMENTS,
    )
    runs = root / "outputs" / "runs"
    assert path.parents[1].name.endswith("_demo_compare")
    compared = json.loads((path.parents[1] / "compare.json").read_text())
    assert len(compared["pairs"]) == 1
    lr_find = json.loads((next(runs.glob("*_demo_lr_find")) / "summary.json").read_text())
    assert 0 < lr_find["suggestion"] < 1
    sweep = next(runs.glob("*_demo_sweep"))
    assert len(pd.read_csv(sweep / "trials.csv")) == 2
    assert load_config(sweep / "best_config.yaml").phase1.epochs >= 1
    cv = json.loads((next(runs.glob("*_demo_cv")) / "cv.json").read_text())
    assert cv["folds"] == 2


def test_the_kernel_is_shut_down_without_the_interrupt_it_would_log(monkeypatch):
    """jupyter_client's SIGINT before shutdown is what the kernel logged as an ERROR."""
    import asyncio
    import signal

    from transferlab.notebooks import quiet_shutdown_manager

    manager = quiet_shutdown_manager()(kernel_name=KERNEL_NAME)
    sent = []

    async def record(signum):
        sent.append(signum)

    async def nothing(*args, **kwargs):
        pass

    monkeypatch.setattr(type(manager), "has_kernel", property(lambda self: True))
    monkeypatch.setattr(manager, "_async_signal_kernel", record)
    for step in ("_async_request_shutdown", "_async_finish_shutdown", "_async_cleanup_resources"):
        monkeypatch.setattr(manager, step, nothing)
    asyncio.run(manager.shutdown_kernel())  # as nbclient calls it
    assert sent == []
    asyncio.run(manager.interrupt_kernel())  # an interrupt asked for is still sent
    assert sent == [signal.SIGINT]
