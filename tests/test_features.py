"""Fusion and ROI models trained end to end on tasks only their extra inputs can solve."""

from __future__ import annotations

from tests.conftest import ctrl_c_at_epoch
from tests.side_data import box_task, metadata_task
from transferlab.training import train_phase


def side_run(cfg, tmp_path, csv, mode: str, epochs: int = 15, **data):
    """The shrunk demo config on a CSV task, small_resnet from scratch, phase 1 only."""
    cfg.data.kind, cfg.data.data_dir, cfg.data.splits = "csv", str(csv), [0.6, 0.4, 0.0]
    cfg.data.input_size = 16
    for key, value in data.items():
        setattr(cfg.data, key, value)
    cfg.model.backbone, cfg.model.weights, cfg.model.image_size = "small_resnet", "none", 16
    cfg.model.inputs = mode
    cfg.train.monitor = "val_accuracy"
    cfg.phase1.epochs, cfg.phase1.learning_rate, cfg.phase1.patience = epochs, 1e-2, 0
    cfg.check()
    return train_phase(cfg, "phase1")


def test_fusion_beats_image_only_when_the_label_is_in_the_metadata(cfg, tmp_path):
    csv = metadata_task(tmp_path / "meta", count=100)
    columns = {"metadata_columns": ["age", "noise"]}
    image = side_run(cfg, tmp_path, csv, "image", **columns)
    fusion = side_run(cfg, tmp_path, csv, "fusion", **columns)
    assert fusion.summary["feature_cached"] and fusion.summary["side_inputs"] == ["metadata"]
    assert fusion.model_path.name == "demo_fusion_phase1_best.keras"
    assert image.model_path.name == "demo_phase1_best.keras"

    assert fusion.best_metrics["val_accuracy"] >= 0.85
    assert fusion.best_metrics["val_accuracy"] - image.best_metrics["val_accuracy"] >= 0.25


def test_roi_beats_whole_image_when_the_label_is_inside_a_box(cfg, tmp_path):
    csv = box_task(tmp_path / "box", count=100)
    columns = {"boxes_column": "boxes", "max_boxes": 2}
    whole = side_run(cfg, tmp_path, csv, "image", **columns)
    roi = side_run(cfg, tmp_path, csv, "roi", **columns)

    assert roi.best_metrics["val_accuracy"] >= 0.85
    assert roi.best_metrics["val_accuracy"] - whole.best_metrics["val_accuracy"] >= 0.25


def test_roi_and_fusion_runs_go_through_every_stage(cfg, tmp_path):
    """Phase 2, evaluation, Grad-CAM on the image branch and predict with named inputs."""
    import numpy as np
    import pytest

    from transferlab.evaluation import evaluate, predict
    from transferlab.evaluation.gradcam import run_gradcam

    csv = box_task(tmp_path / "box", count=40)
    cfg.phase2.epochs, cfg.eval.split, cfg.eval.gradcam_images = 1, "val", 2
    cfg.eval.gradcam_layer = "conv3_block2_out"  # 4x4 at 16 px: a heatmap with some shape
    for mode, data in (("roi", {}), ("fusion", {"metadata_columns": []})):
        side_run(cfg, tmp_path, csv, mode, 2, boxes_column="boxes", max_boxes=2, **data)
        if mode == "roi":
            second = train_phase(cfg, "phase2")
            # The better of the two ROI models, phase 2's only if it beat phase 1's.
            best_phase = "phase1" if second.summary["kept_phase1"] else "phase2"
            assert second.model_path.name == f"demo_roi_{best_phase}_best.keras"
        result = evaluate(cfg)
        assert result.metrics["inputs"] == mode and result.metrics["num_samples"] == 16
        cam = run_gradcam(cfg)
        assert all(p.is_file() for p in cam.figures)
    images = [np.zeros((32, 32, 3), np.uint8)] * 2
    boxes = np.array([[[0.1, 0.1, 0.3, 0.3], [0, 0, 0, 0]]] * 2, np.float32)
    table = predict(second.model_path, images, ["green", "red"], side_inputs={"boxes": boxes})
    assert len(table) == 2
    with pytest.raises(ValueError, match=r"takes the inputs image, boxes .*missing: boxes"):
        predict(second.model_path, images, ["green", "red"])


def test_a_notebook_parameter_switches_the_input_mode():
    import nbformat

    from tests.conftest import ROOT
    from transferlab.notebooks import notebook_config

    for name in ("02_train_phase1", "03_train_phase2", "04_evaluate", "05_gradcam"):
        nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
        (parameters,) = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert "\ninputs = None" in parameters.source
        assert any("model__inputs=inputs" in c.source for c in nb.cells)
    csv = "data.kind=csv data.data_dir=labels.csv data.boxes_column=boxes"
    for inputs, name in ((None, "demo"), ("fusion", "demo_fusion"), ("roi", "demo_roi")):
        cfg = notebook_config(str(ROOT / "configs" / "demo.yaml"), csv, model__inputs=inputs)
        assert cfg.model_name == name


def test_an_interrupted_fusion_run_resumes_where_it_stopped(cfg, tmp_path):
    import pandas as pd

    csv = metadata_task(tmp_path / "meta", count=40)
    with ctrl_c_at_epoch(3):
        first = side_run(cfg, tmp_path, csv, "fusion", 4, metadata_columns=["age", "noise"])
    assert first.stop_reason == "interrupted" and first.epochs_run == 2
    second = train_phase(cfg, "phase1")
    assert second.run_dir == first.run_dir
    assert second.stop_reason == "completed" and second.epochs_run == 4
    assert pd.read_csv(second.run_dir / "metrics.csv")["epoch"].tolist() == [1, 2, 3, 4]
    assert second.summary["side_inputs"] == ["metadata"]
