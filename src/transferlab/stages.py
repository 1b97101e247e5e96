"""One table of the pipeline's stages: the CLI, make and the notebooks all read it.

Each stage names the library function that does the work (called with the resolved
Config and the stage's arguments), the notebook that runs it under papermill, and the
kind of run directory it writes (``outputs/runs/<ts>_<experiment>_<run_kind>/``).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from transferlab.config import Config


@dataclass(frozen=True)
class Stage:
    function: str  # "module:function", imported only when the stage runs
    notebook: str | None
    run_kind: str
    help: str
    args: tuple = ()
    # What to lower when the stage runs out of memory.
    memory_hint: str = "lower train.batch_size (e.g. SET='train.batch_size=16')"

    def run(self, cfg: Config) -> object:
        module_name, function_name = self.function.split(":")
        function = getattr(importlib.import_module(module_name), function_name)
        return function(cfg, *self.args)


STAGES = {
    "prepare-data": Stage(
        "transferlab.data:prepare_data", "01_explore_data.ipynb", "data", "Load, split, audit"
    ),
    "data-health": Stage(
        "transferlab.data.health.run:data_health",
        "09_data_health.ipynb",
        "data_health",
        "Near-duplicates across splits, likely label errors, outliers",
    ),
    "train-phase1": Stage(
        "transferlab.training:train_phase",
        "02_train_phase1.ipynb",
        "phase1",
        "Train the head on the frozen backbone",
        ("phase1",),
        "lower train.batch_size, or data.input_size / model.image_size",
    ),
    "train-phase2": Stage(
        "transferlab.training:train_phase",
        "03_train_phase2.ipynb",
        "phase2",
        "Fine-tune from phase2.unfreeze_from",
        ("phase2",),
        "lower train.batch_size (fine-tuning holds activations for backprop), or unfreeze "
        "less (phase2.unfreeze_from=conv5)",
    ),
    "evaluate": Stage(
        "transferlab.evaluation:evaluate",
        "04_evaluate.ipynb",
        "evaluate",
        "Evaluate on a split",
        memory_hint="lower train.batch_size (evaluation reads in training's batches), or "
        "turn TTA off (eval.tta=0)",
    ),
    "gradcam": Stage(
        "transferlab.evaluation:run_gradcam",
        "05_gradcam.ipynb",
        "gradcam",
        "Grad-CAM grids",
        memory_hint="lower eval.gradcam_images or train.batch_size",
    ),
    "predict": Stage(
        "transferlab.evaluation:predict_images",
        "07_predict.ipynb",
        "predict",
        "Classify new photos (predict.data)",
        memory_hint="lower train.batch_size or predict.gradcam_images",
    ),
    "report": Stage(
        "transferlab.reports:write_day_checkpoint",
        "06_day_checkpoint.ipynb",
        "report",
        "Day-checkpoint report",
    ),
    "export": Stage(
        "transferlab.evaluation:export_model",
        None,
        "export",
        "The best model as a TensorFlow SavedModel for serving",
    ),
    "bench": Stage("transferlab.benchmarks:run_benchmarks", None, "bench", "Benchmarks"),
    # Choosing between runs (notebooks/08_experiments.ipynb runs all four).
    "compare": Stage(
        "transferlab.experiments.compare:compare_runs",
        None,
        "compare",
        "Compare evaluate runs: settings that differ, intervals, paired tests",
    ),
    "lr-find": Stage(
        "transferlab.experiments.lr_finder:find_learning_rate",
        None,
        "lr_find",
        "Learning-rate range test (lr_find.phase)",
    ),
    "sweep": Stage(
        "transferlab.experiments.sweep:run_sweep",
        None,
        "sweep",
        "Optuna search over the head's settings on cached features",
        memory_hint="lower train.batch_size (the features are computed in its batches)",
    ),
    "cv": Stage(
        "transferlab.experiments.cv:cross_validate",
        None,
        "cv",
        "k-fold cross-validation over train + val (cv.folds)",
    ),
}

# What `make demo` runs, in order.
DEMO_STAGES = ["prepare-data", "train-phase1", "train-phase2", "evaluate", "gradcam", "report"]
