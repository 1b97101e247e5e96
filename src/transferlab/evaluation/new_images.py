"""The predict stage: the experiment's best model on new photos, with a page to read.

``predict_images(cfg)`` classifies ``predict.data`` (a photo or a folder of photos)
and writes ``outputs/runs/<ts>_<experiment>_predict/``: predictions.csv (the top-k
classes of every photo with their probabilities), skipped.csv (files that could not
be read, with why), figures/gradcam_named.png (the first photos with their Grad-CAM
overlays) and predictions.md, a short page with the grid and the table.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from transferlab.config import Config, ConfigError
from transferlab.data.splits import write_skipped
from transferlab.evaluation.gradcam import GridMaker, default_layer_name
from transferlab.evaluation.inference import default_model_path, predict
from transferlab.models import load_model
from transferlab.models.signature import input_size_of, side_names_of
from transferlab.runs import new_run_dir, write_json, write_text


@dataclass
class PredictResult:
    run_dir: Path
    predictions: pd.DataFrame
    skipped: list[dict]
    page: Path
    temperature: float | None = None

    def __str__(self) -> str:
        calibrated = (
            f" (probabilities calibrated, temperature {self.temperature:.3f})"
            if self.temperature is not None
            else ""
        )
        return (
            f"{len(self.predictions)} photo(s) classified{calibrated}, "
            f"{len(self.skipped)} skipped; {self.page}"
        )


def predict_images(cfg: Config, model_path: str | Path | None = None) -> PredictResult:
    """Classify ``predict.data`` with the best model (or ``model_path``); write a run dir."""
    if not cfg.predict.data:
        raise ConfigError(
            "predict.data is not set: give a photo or a folder of photos, e.g. "
            "make predict DATA=path/to/photos (or SET='predict.data=path/to/photos')"
        )
    source = Path(cfg.predict.data)
    if not source.exists():
        raise FileNotFoundError(f"predict.data={source} does not exist")
    model_path = Path(model_path) if model_path else default_model_path(cfg)
    model = load_model(model_path)
    if side_names_of(model):
        raise ValueError(
            f"this model takes {', '.join(side_names_of(model))} besides the photo; "
            "make predict reads photos alone. Call transferlab.evaluation.predict with "
            "side_inputs= from Python instead"
        )
    table = predict(model_path, source, output_dir=cfg.output_dir, batch_size=cfg.train.batch_size)
    skipped = table.attrs["skipped"]
    temperature = table.attrs["temperature"]
    class_names = [c.removeprefix("prob_") for c in table.columns if c.startswith("prob_")]
    top = top_k_table(table, class_names, min(cfg.predict.top_k, len(class_names)))

    run_dir = new_run_dir(cfg.output_dir, cfg.experiment, "predict")
    cfg.save(run_dir / "config.json")
    write_text(run_dir / "predictions.csv", top.to_csv(index=False))
    write_skipped(run_dir / "skipped.csv", skipped)
    figure = None
    shown = top["path"].head(cfg.predict.gradcam_images).tolist()
    if shown:
        layer = cfg.eval.gradcam_layer or default_layer_name(model, cfg.model.backbone)
        grid = GridMaker(model, None, input_size_of(model), layer, run_dir / "figures")
        figure = grid.named(shown, class_names, temperature)
    summary = {
        "model_path": str(model_path),
        "data": str(source),
        "num_images": len(top),
        "num_skipped": len(skipped),
        "top_k": cfg.predict.top_k,
        "class_counts": top["predicted_class"].value_counts().to_dict(),
        # Set when a temperature fitted to this model file (make evaluate with
        # eval.calibrate=true) scaled the probabilities.
        "temperature": temperature,
    }
    write_json(run_dir / "summary.json", summary)
    page = write_page(run_dir, top, skipped, figure, summary)
    return PredictResult(run_dir, top, skipped, page, temperature)


def top_k_table(table: pd.DataFrame, class_names: list[str], k: int) -> pd.DataFrame:
    """path, predicted class and confidence, then class_1, prob_1 ... class_k, prob_k."""
    probabilities = table[[f"prob_{c}" for c in class_names]].to_numpy()
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    top = pd.DataFrame(
        {
            "path": table["sample_id"],
            "predicted_class": table["predicted_class"],
            "confidence": table["confidence"],
        }
    )
    for rank in range(k):
        picked = order[:, rank]
        top[f"class_{rank + 1}"] = [class_names[i] for i in picked]
        top[f"prob_{rank + 1}"] = probabilities[np.arange(len(table)), picked]
    return top


def write_page(run_dir: Path, top, skipped, figure, summary) -> Path:
    """predictions.md: what was classified, the Grad-CAM grid, the table, what was skipped."""
    lines = [
        "# Predictions",
        "",
        f"Model `{summary['model_path']}` on `{summary['data']}`: "
        f"{summary['num_images']} photo(s) classified, {summary['num_skipped']} skipped.",
        "",
    ]
    counts = ", ".join(f"{name} {count}" for name, count in summary["class_counts"].items())
    lines += [f"Predicted classes: {counts}.", ""]
    if summary["temperature"] is not None:
        lines += [
            f"Probabilities are calibrated: temperature {summary['temperature']:.3f}, "
            "fitted on the validation split by make evaluate.",
            "",
        ]
    if figure is not None:
        lines += [f"![Grad-CAM of the first photos]({figure.relative_to(run_dir)})", ""]
    ranks = range(1, sum(c.startswith("class_") for c in top.columns) + 1)
    lines += [
        "| photo | " + " | ".join(f"top {rank}" for rank in ranks) + " |",
        "|---|" + "---|" * len(ranks),
    ]
    for row in top.head(50).to_dict("records"):
        cells = [f"{row[f'class_{rank}']} {row[f'prob_{rank}']:.2f}" for rank in ranks]
        lines.append(f"| {Path(row['path']).name} | " + " | ".join(cells) + " |")
    if len(top) > 50:
        lines += ["", f"The other {len(top) - 50} are in predictions.csv."]
    if skipped:
        lines += ["", "## Skipped", ""]
        lines += [f"- `{s['path']}`: {s['reason']}" for s in skipped[:50]]
        if len(skipped) > 50:
            lines.append(f"- and {len(skipped) - 50} more, listed in skipped.csv")
    return write_text(run_dir / "predictions.md", "\n".join(lines) + "\n")
