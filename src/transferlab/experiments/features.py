"""Backbone features computed once, and heads trained on them.

Sweeps, k-fold cross-validation and the phase-1 learning-rate finder all train the
head many times on a frozen backbone. The backbone's pooled features of every image
are computed once, kept in ``outputs/features/<key>.npz`` (the key changes with the
data, the splits, the model and the seed, so a stale file is never read), and each
head then trains on them in seconds.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from transferlab.config import Config
from transferlab.data import ImageDataset, load_dataset, prepare_splits
from transferlab.data.caching import images_digest
from transferlab.data.pipeline import input_size_for, side_arrays
from transferlab.data.side import side_input_names
from transferlab.models import build_head_model, build_model
from transferlab.models.split import HEAD_CUT, prefix_model
from transferlab.progress import say
from transferlab.runs import atomic_path
from transferlab.training.features import cache_prefix_table, column_stats
from transferlab.training.optim import class_weights, compile_model, make_optimizer

SPLITS = ("train", "val", "test")


@dataclass
class FeatureTable:
    """Every image's pooled backbone features, row-aligned with its id, label and split."""

    sample_ids: np.ndarray
    labels: np.ndarray
    splits: np.ndarray  # "train", "val" or "test" per row
    groups: np.ndarray  # the group column's value ("" without one)
    features: np.ndarray  # float32 (N, D)
    class_names: list[str]
    # Fusion inputs ("metadata", "boxes", "box_mask"), row-aligned; empty for images alone.
    side: dict[str, np.ndarray] = field(default_factory=dict)
    # images_digest of the train and val rows, in table order: what k-fold runs over, so
    # its files can say which images (by size and time) their probabilities are of.
    pool_images: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def rows(self, *splits: str) -> np.ndarray:
        """Row positions of the given splits, in table order."""
        return np.flatnonzero(np.isin(self.splits, splits))

    def inputs(self, rows: np.ndarray):
        """What a head takes for ``rows``: the features, or a dict with the side inputs."""
        if not self.side:
            return self.features[rows]
        return {"features": self.features[rows], **{k: v[rows] for k, v in self.side.items()}}

    def one_hot(self, rows: np.ndarray) -> np.ndarray:
        return np.eye(self.num_classes, dtype=np.float32)[self.labels[rows]]


def backbone_features(cfg: Config, splits: tuple[str, ...] = SPLITS) -> FeatureTable:
    """The pooled backbone features of ``splits``, read from the cache or computed once."""
    dataset = load_dataset(cfg)
    parts = prepare_splits(cfg, dataset)
    table = pd.concat(
        [parts[name].assign(split=name) for name in splits if not parts[name].empty],
        ignore_index=True,
    )
    rows = dataset.rows(table["sample_id"])
    size = input_size_for(cfg, dataset)
    images = images_digest(dataset, rows)
    path = feature_cache_path(cfg, table, size, images)
    if path.is_file():
        features = np.load(path)["features"]
    else:
        features = compute_features(cfg, dataset, table, size)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as f:
            # The images' digest goes with them: data health reads only current features.
            np.savez(f, features=features, images=np.array(images))
    return FeatureTable(
        sample_ids=table["sample_id"].to_numpy(),
        labels=dataset.table["label"].to_numpy()[rows].astype(int),
        splits=table["split"].to_numpy(),
        groups=dataset.table["group"].astype(str).to_numpy()[rows],
        features=features,
        class_names=list(dataset.class_names),
        side=side_arrays(dataset, rows, side_input_names(cfg))
        if cfg.model.inputs == "fusion"
        else {},
        pool_images=images_digest(dataset, rows[table["split"].isin(["train", "val"]).to_numpy()]),
    )


def feature_cache_path(cfg: Config, table: pd.DataFrame, size: int, images: str) -> Path:
    """``outputs/features/<experiment>_<key>.npz``: the key covers all that shapes a feature,
    the images included (``images``: their ``images_digest``, so an image replaced under
    the same name is a new key)."""
    model = cfg.model
    weights = model.weights
    if Path(weights).is_file():
        stat = Path(weights).stat()
        weights = f"{Path(weights).resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    facts = {
        "data": cfg.data.__dict__,
        "model": [model.backbone, weights, model.image_size, model.pooling, model.inputs],
        "roi": [model.roi, model.roi_index, model.roi_margin] if model.inputs == "roi" else None,
        # A random-init backbone (weights "none") depends on the seed.
        "seed": cfg.seed,
        "input_size": size,
        "samples": table["sample_id"].astype(str).tolist(),
        "splits": table["split"].tolist(),
        "images": images,
    }
    key = hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()
    return Path(cfg.output_dir) / "features" / f"{cfg.experiment}_{key[:16]}.npz"


def compute_features(
    cfg: Config, dataset: ImageDataset, table: pd.DataFrame, size: int
) -> np.ndarray:
    """One backbone pass over ``table``'s images, seeded as phase 1 builds its model: the
    frozen prefix up to the pooled features, computed as phase 1 caches them."""
    keras.utils.set_random_seed(cfg.seed)
    model = build_model(cfg, dataset.num_classes, size)
    say(f"backbone features of {len(table)} images, computed once (cached under outputs/)")
    prefix = prefix_model(model, HEAD_CUT)
    cache = cache_prefix_table(prefix, HEAD_CUT, dataset, table, size, cfg, "features")
    return np.asarray(cache.outputs, dtype=np.float32)


def head_config(cfg: Config, **settings) -> Config:
    """A copy of ``cfg`` with head settings changed: learning_rate, weight_decay, optimizer,
    epochs (phase 1's), dropout (the model's), label_smoothing and class_weight (train's)."""
    changed = copy.deepcopy(cfg)
    homes = {
        "learning_rate": changed.phase1,
        "weight_decay": changed.phase1,
        "optimizer": changed.phase1,
        "epochs": changed.phase1,
        "dropout": changed.model,
        "label_smoothing": changed.train,
        "class_weight": changed.train,
    }
    for name, value in settings.items():
        setattr(homes[name], name, value)
    return changed


def train_head(
    cfg: Config,
    table: FeatureTable,
    train_rows: np.ndarray,
    val_rows: np.ndarray | None = None,
    callbacks: list[keras.callbacks.Callback] | tuple = (),
    seed: int | None = None,
) -> tuple[keras.Model, keras.callbacks.History]:
    """Train phase 1's head (``cfg.phase1``, ``cfg.model``, ``cfg.train``) on cached features.

    Seeded (``seed``, default ``cfg.seed``), so the same settings give the same head.
    """
    keras.utils.set_random_seed(cfg.seed if seed is None else seed)
    stats = metadata_stats_of(cfg, table, train_rows)
    head = build_head_model(cfg, table.num_classes, table.features.shape[1], stats)
    batch = cfg.train.batch_size
    steps = int(np.ceil(len(train_rows) / batch))
    # Fit the head's logits view (the loss reads the logits); the head shares its weights.
    trainer = compile_model(head, cfg, make_optimizer(cfg.phase1, cfg.train.clip_norm, steps))
    validation = None
    if val_rows is not None and len(val_rows):
        validation = (table.inputs(val_rows), table.one_hot(val_rows))
    history = trainer.fit(
        table.inputs(train_rows),
        table.one_hot(train_rows),
        batch_size=batch,
        epochs=cfg.phase1.epochs,
        validation_data=validation,
        class_weight=class_weights(cfg, table.labels[train_rows], table.num_classes),
        callbacks=list(callbacks),
        verbose=0,
    )
    return head, history


def predict_head(head: keras.Model, table: FeatureTable, rows: np.ndarray) -> np.ndarray:
    """Class probabilities of ``rows`` (float64, rows sum to 1)."""
    return head.predict(table.inputs(rows), batch_size=1024, verbose=0).astype(np.float64)


def metadata_stats_of(cfg: Config, table: FeatureTable, rows: np.ndarray) -> dict | None:
    """The fusion head's metadata normalization, from the training rows, as phase 1's."""
    if "metadata" not in table.side:
        return None
    return column_stats(table.side["metadata"][rows], cfg.data.metadata_columns)
