"""Evaluation: inference, metrics, TTA, Grad-CAM and figures, on saved models.

``evaluate(cfg)``, ``run_gradcam(cfg)`` and ``predict(model_path, images)`` are the
entry points; all three read pixels through the data package's one reader and
stream them batch by batch. ``export_model(cfg)`` writes the best model as a
SavedModel for serving.
"""

from transferlab.evaluation.evaluate import EvalResult, evaluate
from transferlab.evaluation.export import ExportError, ExportResult, export_model
from transferlab.evaluation.gradcam import GradcamResult, make_gradcam_heatmap, run_gradcam
from transferlab.evaluation.inference import default_model_path, predict
from transferlab.evaluation.metrics import compute_metrics, predictions_table
from transferlab.evaluation.new_images import PredictResult, predict_images

__all__ = [
    "EvalResult",
    "ExportError",
    "ExportResult",
    "GradcamResult",
    "PredictResult",
    "compute_metrics",
    "default_model_path",
    "evaluate",
    "export_model",
    "make_gradcam_heatmap",
    "predict",
    "predict_images",
    "predictions_table",
    "run_gradcam",
]
