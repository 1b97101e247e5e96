"""Grad-CAM (Selvaraju et al., 2017) for the models this project saves.

The saved model nests the backbone as one layer, with the resize and preprocessing
layers in front, so the keras.io recipe (``keras.Model(model.inputs,
[model.get_layer(name).output, model.output])``) fails with "graph disconnected":
the conv layer lives in the backbone's own graph. Instead we rebuild the forward
pass: the layers before the backbone, a sub-model of the backbone that returns
[conv output, backbone output], then the head up to the pre-softmax "logits".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from transferlab.config import Config
from transferlab.config.schema import did_you_mean
from transferlab.data import ImageDataset, load_dataset, prepare_splits
from transferlab.evaluation.figures import plot_image_grid, short
from transferlab.evaluation.inference import (
    default_model_path,
    feed_size,
    list_sources,
    pixels_of,
    predict_dataset,
    split_batches,
)
from transferlab.evaluation.metrics import confident_mistakes, predictions_table
from transferlab.experiments.stats import apply_temperature
from transferlab.models import get_backbone, load_model
from transferlab.models.signature import assemble_inputs, side_names_of
from transferlab.runs import find_runs, new_run_dir, read_json, write_json

# Layers of ROI models whose output is the image the backbone actually sees.
ROI_LAYERS = ("roi_crop", "roi_mask")
# Overlays are drawn at least this many pixels on a side, whatever the photo's own size:
# an 8 x 8 digit or a 32 x 32 CIFAR-10 image would otherwise show a few coloured blocks.
DISPLAY_MIN = 160
# A figure holds at most this many image | overlay pairs, three to a row: it fits a page.
PAIRS_PER_FIGURE = 12
PAIRS_PER_ROW = 3


@dataclass
class GradcamResult:
    run_dir: Path
    layer_name: str
    figures: list[Path] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{len(self.figures)} Grad-CAM figures for layer {self.layer_name}; {self.run_dir}"


def default_layer_name(model, backbone_name: str | None = None) -> str:
    """The backbone table's Grad-CAM layer, else the backbone's last 4-D output layer."""
    if backbone_name:
        return get_backbone(backbone_name).gradcam_layer
    candidates = spatial_layer_names(backbone_of(model))
    if not candidates:
        raise ValueError("the model has no layer with a spatial (4-D) output for Grad-CAM")
    return candidates[-1]


def backbone_of(model):
    try:
        return model.get_layer("backbone")
    except ValueError:
        return model  # a flat model: the conv layer is in the model's own graph


def spatial_layer_names(model) -> list[str]:
    names = []
    for layer in model.layers:
        try:
            shape = layer.output.shape
        except (AttributeError, ValueError):
            continue
        if len(shape) == 4:
            names.append(layer.name)
    return names


def make_gradcam_model(model, layer_name: str):
    """A model mapping images to [conv layer output, pre-softmax logits]."""
    import keras

    backbone = backbone_of(model)
    try:
        conv_layer = backbone.get_layer(layer_name)
    except ValueError:
        names = spatial_layer_names(backbone)
        hint = did_you_mean(layer_name, names, cutoff=0.3)
        raise ValueError(
            f"Grad-CAM layer {layer_name!r} is not in the model's backbone{hint} "
            f"(conv layers end with e.g. {', '.join(names[-3:])})"
        ) from None
    if backbone is model:
        return keras.Model(model.inputs, [conv_layer.output, model.get_layer("logits").output])

    inner = keras.Model(backbone.inputs, [conv_layer.output, backbone.output])
    if side_names_of(model):
        return replay_with_conv_output(model, backbone, inner)
    inputs = keras.Input(model.input_shape[1:])
    x, conv_output, stage = inputs, None, "pre"
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer) or layer.name == "augmentation":
            continue  # augmentation is off at inference; leave it out of the graph
        if layer is backbone:
            conv_output, x = inner(x, training=False)
            stage = "head"
            continue
        x = layer(x)
        if stage == "head" and layer.name == "logits":
            return keras.Model(inputs, [conv_output, x])
    raise ValueError(
        "the model has no 'logits' layer after its backbone; cannot take the class score"
    )


def replay_with_conv_output(model, backbone, inner):
    """[conv output, logits] of a model with several inputs (fusion, ROI).

    Its graph is not a chain, so it is replayed with ``clone_model``: every layer is
    shared (same weights), the backbone call swapped for ``inner``, whose conv output
    and the logits are picked up on the way.
    """
    import keras

    found = {}

    def call(layer, *args, **kwargs):
        if layer is backbone:
            found["conv"], output = inner(*args, **kwargs)
            return output
        output = layer(*args, **kwargs)
        if layer.name == "logits":
            found["logits"] = output
        return output

    replayed = keras.models.clone_model(
        model, clone_function=lambda layer: layer, call_function=call
    )
    return keras.Model(replayed.inputs, [found["conv"], found["logits"]])


def seen_images(model, inputs) -> np.ndarray | None:
    """The images after an ROI model's crop or mask (what the backbone sees), else None."""
    import keras

    names = [layer.name for layer in model.layers if layer.name in ROI_LAYERS]
    if not names:
        return None
    seen = keras.Model(model.inputs, model.get_layer(names[0]).output).predict(inputs, verbose=0)
    return np.clip(np.round(seen), 0, 255).astype(np.uint8)


def make_gradcam_heatmap(
    images, model, layer_name: str | None = None, class_index=None
) -> np.ndarray:
    """Grad-CAM heatmaps in [0, 1] at the conv layer's resolution, shape (N, h, w).

    ``images``: raw pixels (N, H, W, 3) as the model takes them, or a dict of named
    inputs for fusion and ROI models. ``class_index``: an int or one per image; default
    the predicted class.
    """
    import tensorflow as tf

    layer_name = layer_name or default_layer_name(model)
    grad_model = make_gradcam_model(model, layer_name)
    if isinstance(images, dict):
        images = {
            k: tf.convert_to_tensor(np.asarray(v), dtype=tf.float32) for k, v in images.items()
        }
    else:
        images = tf.convert_to_tensor(np.asarray(images), dtype=tf.float32)
    with tf.GradientTape() as tape:
        conv_output, logits = grad_model(images, training=False)
        logits = tf.cast(logits, tf.float32)
        if class_index is None:
            index = tf.argmax(logits, axis=1, output_type=tf.int32)
        else:
            index = tf.broadcast_to(tf.constant(class_index, tf.int32), tf.shape(logits)[:1])
        # The pre-softmax score: softmax gradients vanish for confident predictions.
        score = tf.gather(logits, index, axis=1, batch_dims=1)
    grads = tf.cast(tape.gradient(score, conv_output), tf.float32)
    conv_output = tf.cast(conv_output, tf.float32)
    weights = tf.reduce_mean(grads, axis=(1, 2))  # one weight per channel: the spatial mean
    heatmap = tf.nn.relu(tf.einsum("bhwc,bc->bhw", conv_output, weights))
    peak = tf.reduce_max(heatmap, axis=(1, 2), keepdims=True)
    return (heatmap / tf.maximum(peak, 1e-12)).numpy()


def upsample_heatmap(heatmap: np.ndarray, height: int, width: int) -> np.ndarray:
    """Heatmap stretched onto an image of the given size (bilinear)."""
    return cv2.resize(heatmap.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)


def overlay_heatmap(
    image: np.ndarray,
    heatmap: np.ndarray,
    alpha: float = 0.4,
    colormap: int = cv2.COLORMAP_JET,
    size: int | None = None,
) -> np.ndarray:
    """The heatmap, coloured with an OpenCV colormap, blended onto the original RGB image.

    ``size``: draw it ``size`` pixels on the image's longer side (see ``upscale``); the
    heatmap goes straight from the conv layer's grid to that size, so it stays smooth.
    """
    if size:
        image = upscale(image, size)
    heat = upsample_heatmap(heatmap, image.shape[0], image.shape[1])
    colored = cv2.applyColorMap(np.uint8(255 * np.clip(heat, 0, 1)), colormap)
    colored = cv2.cvtColor(colored, cv2.COLOR_BGR2RGB)
    return cv2.addWeighted(colored, alpha, image.astype(np.uint8), 1 - alpha, 0)


def upscale(image: np.ndarray, size: int) -> np.ndarray:
    """``image`` resized to ``size`` pixels on its longer side, bilinearly, as the model's
    resize layer does: what the backbone sees, at a size a figure can show."""
    height, width = image.shape[:2]
    scale = size / max(height, width)
    shape = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image.astype(np.uint8), shape, interpolation=cv2.INTER_LINEAR)


def side_by_side(left: np.ndarray, right: np.ndarray, gap: int = 6) -> np.ndarray:
    """Two RGB images in one, on white, top-aligned: an image and its overlay."""
    height = max(left.shape[0], right.shape[0])
    canvas = np.full((height, left.shape[1] + gap + right.shape[1], 3), 255, dtype=np.uint8)
    canvas[: left.shape[0], : left.shape[1]] = left
    canvas[: right.shape[0], left.shape[1] + gap :] = right
    return canvas


def colour_scale(colormap: int = cv2.COLORMAP_JET):
    """The OpenCV colormap the overlays use, as a matplotlib one for the figure's scale."""
    from matplotlib.colors import ListedColormap

    colours = cv2.applyColorMap(np.arange(256, dtype=np.uint8)[:, None], colormap)
    return ListedColormap(colours[:, 0, ::-1] / 255.0)  # BGR to RGB


def heatmap_peak(heatmap: np.ndarray, height: int, width: int) -> tuple[int, int]:
    """(row, column) of the heatmap's maximum on the original image."""
    heat = upsample_heatmap(heatmap, height, width)
    row, col = np.unravel_index(int(np.argmax(heat)), heat.shape)
    return int(row), int(col)


def gradcam_overlays(
    model, pixels: np.ndarray, layer_name: str, class_index=None, side=None, display=None
):
    """Heatmaps of model-sized pixels (N, S, S, 3), overlaid on those pixels.

    ``side``: the images' metadata and boxes, for fusion and ROI models. An ROI model's
    heatmap is overlaid on its crop (or masked image), the part of the image it saw.
    ``display``: draw the overlays that many pixels on a side (default: the pixels' own).
    """
    inputs = assemble_inputs(model, pixels, side)
    heatmaps = make_gradcam_heatmap(inputs, model, layer_name, class_index)
    seen = seen_images(model, inputs)
    shown = pixels if seen is None else seen
    overlays = [overlay_heatmap(im, h, size=display) for im, h in zip(shown, heatmaps, strict=True)]
    return overlays, heatmaps


def display_size(model, size: int) -> int:
    """The side overlays are drawn at: the model's resize layer's, at least DISPLAY_MIN."""
    try:
        side = int(model.get_layer("resize").height)
    except ValueError:
        side = size  # no resize layer: the model sees the pixels as they are fed
    return max(side, DISPLAY_MIN)


# --- the gradcam stage ---------------------------------------------------------------


def run_gradcam(
    cfg: Config,
    model_path: str | Path | None = None,
    split: str | None = None,
    images=None,
    layer_name: str | None = None,
) -> GradcamResult:
    """Grad-CAM grids (correct per class, confident mistakes, named images) in a run dir.

    The split's predictions come from the newest evaluate run of the same model and
    split when there is one; otherwise they are computed here, batch by batch. Only
    the images the grids draw are read.
    """
    model_path = Path(model_path) if model_path else default_model_path(cfg)
    model = load_model(model_path)
    layer_name = (
        layer_name or cfg.eval.gradcam_layer or default_layer_name(model, cfg.model.backbone)
    )
    make_gradcam_model(model, layer_name)  # fail early, naming the nearest layer, if it is wrong
    if images is not None and side_names_of(model):
        raise ValueError(
            "Grad-CAM on your own images needs their metadata and boxes too, which this "
            f"model takes ({', '.join(side_names_of(model))}); leave images out, or use "
            "gradcam_overlays"
        )
    split = split or cfg.eval.split
    dataset = load_dataset(cfg)
    table = prepare_splits(cfg, dataset)[split]
    predictions, source = saved_predictions(cfg, model_path, split, table)
    if predictions is None:
        batches = split_batches(model, cfg, dataset, table)
        probabilities = predict_dataset(model, batches, len(table), f"Grad-CAM: predict {split}")
        predictions = predictions_table(
            table["sample_id"], table["label"], probabilities, dataset.class_names
        )

    run_dir = new_run_dir(cfg.output_dir, cfg.experiment, "gradcam")
    # The day checkpoint reads each run's mode (image, fusion, roi) from its config.
    cfg.save(run_dir / "config.json")
    count = cfg.eval.gradcam_images
    size = feed_size(model, cfg, dataset)
    grid = GridMaker(model, dataset, size, layer_name, run_dir / "figures")
    figures = [grid.correct(predictions, count), grid.mistakes(predictions, count)]
    if images is not None:
        figures.append(grid.named(images, dataset.class_names))
    summary = {
        "model_path": str(model_path),
        "layer_name": layer_name,
        "split": split,
        "num_images": int(len(predictions)),
        "images_per_figure": count,
        "predictions_from": source,
        "figures": [str(p.relative_to(run_dir)) for p in figures],
    }
    write_json(run_dir / "summary.json", summary)
    return GradcamResult(run_dir, layer_name, figures, summary)


def saved_predictions(cfg: Config, model_path: Path, split: str, table: pd.DataFrame):
    """(predictions, run dir) of the newest evaluate run of this model and split, or None.

    A run counts only if it scored exactly this split's images after the model was last
    written.
    """
    for run_dir in reversed(find_runs(cfg.output_dir, cfg.experiment, "evaluate")):
        metrics_file, table_file = run_dir / "metrics.json", run_dir / "predictions.csv"
        if not (metrics_file.is_file() and table_file.is_file()):
            continue
        metrics = read_json(metrics_file)
        same_model = Path(metrics.get("model_path", "")).resolve() == model_path.resolve()
        if not same_model or metrics.get("split") != split:
            continue
        if table_file.stat().st_mtime < model_path.stat().st_mtime:
            return None, None  # the model changed since: its predictions are stale
        saved = pd.read_csv(table_file, dtype={"sample_id": str})
        if saved["sample_id"].tolist() != table["sample_id"].astype(str).tolist():
            return None, None
        return saved, str(run_dir)
    return None, None


class GridMaker:
    """Draws image | Grad-CAM pairs for chosen prediction rows, reading only those images.

    Each pair is drawn at ``display_size`` (the model's resize side, or a readable
    minimum) under the class and confidence, beside a colour scale, three pairs to a row
    and at most PAIRS_PER_FIGURE to a figure.
    """

    def __init__(
        self, model, dataset: ImageDataset | None, size: int, layer_name: str, folder: Path
    ):
        self.model, self.dataset, self.size = model, dataset, size
        self.layer_name, self.folder = layer_name, folder
        self.display = display_size(model, size)

    def correct(self, predictions: pd.DataFrame, count: int) -> Path:
        """The most confident correct images of each class: as many per class as fit."""
        right = predictions[predictions["correct"]]
        groups = [group for _, group in right.groupby("true_label")][:PAIRS_PER_FIGURE]
        per_class = max(1, min(count, PAIRS_PER_FIGURE) // max(len(groups), 1))
        rows = pd.concat(
            [group.nlargest(per_class, "confidence") for group in groups] or [right.head(0)]
        )
        titles = [f"{short(r.true_class)} {r.confidence:.2f}" for r in rows.itertuples()]
        return self.pairs(rows, titles, "gradcam_correct.png", "Correct, per class")

    def mistakes(self, predictions: pd.DataFrame, count: int) -> Path:
        """The most confident mistakes, heatmap of the (wrongly) predicted class."""
        rows = confident_mistakes(predictions, min(count, PAIRS_PER_FIGURE))
        titles = [
            f"{short(r.true_class)} → {short(r.predicted_class)} {r.confidence:.2f}"
            for r in rows.itertuples()
        ]
        return self.pairs(rows, titles, "gradcam_mistakes.png", "Most confident mistakes")

    def pairs(self, rows: pd.DataFrame, titles, name: str, suptitle: str) -> Path:
        shown = []
        if len(rows):
            ids = rows["sample_id"].astype(str)
            pixels = self.dataset.load_images(ids, self.size)
            side = None
            if side_names_of(self.model):
                side = self.dataset.side.arrays(self.dataset.rows(ids))
            overlays, _ = gradcam_overlays(
                self.model, pixels, self.layer_name, side=side, display=self.display
            )
            shown = [
                side_by_side(upscale(original, self.display), overlay)
                for original, overlay in zip(pixels, overlays, strict=True)
            ]
        return self.grid(shown, titles, [bool(ok) for ok in rows["correct"]], name, suptitle)

    def grid(self, shown, titles, marks, name: str, suptitle: str) -> Path:
        return plot_image_grid(
            shown,
            titles,
            self.folder / name,
            marks,
            f"{suptitle} (image | Grad-CAM of the predicted class)",
            columns=PAIRS_PER_ROW,
            colorbar=(colour_scale(), "Grad-CAM (relative importance)"),
            cell=1.6,
        )

    def named(self, images, class_names: list[str], temperature: float | None = None) -> Path:
        """Overlays on the user's own images (paths or arrays), read as ``predict`` reads them.

        Needs no dataset: the predict stage draws new photos with it. ``temperature``:
        the calibration predict applied, so the titles show the same confidences.
        """
        names, items = list_sources(images)
        pixels = np.stack(
            [pixels_of(item, self.size, n) for n, item in zip(names, items, strict=True)]
        )
        overlays, _ = gradcam_overlays(self.model, pixels, self.layer_name, display=self.display)
        probabilities = np.asarray(self.model.predict_on_batch(pixels))
        if temperature is not None:
            probabilities = apply_temperature(probabilities, temperature)
        shown, titles = [], []
        for name, original, overlay, p in zip(names, pixels, overlays, probabilities, strict=True):
            shown.append(side_by_side(upscale(original, self.display), overlay))
            titles.append(
                f"{short(Path(name).name, 18)}: {short(class_names[int(p.argmax())])} {p.max():.2f}"
            )
        return self.grid(shown, titles, None, "gradcam_named.png", "Named images")
