"""``make lr-find PHASE=phase1|phase2``: the learning-rate range test as a stage of its own.

Phase 1's test trains the head on the cached backbone features (computed once and
shared with sweeps and cross-validation), so it takes seconds. Phase 2's trains the
full model as phase 2 starts it: phase 1's best model, unfrozen from
``phase2.unfreeze_from``. The test itself is ``transferlab.training.lr_range``.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from transferlab.config import Config
from transferlab.data import load_dataset, prepare_splits
from transferlab.data.pipeline import input_size_for, labels_of
from transferlab.experiments.features import FeatureTable, backbone_features, metadata_stats_of
from transferlab.models import build_head_model
from transferlab.runs import new_run_dir, write_json
from transferlab.training.lr_range import (
    RangeTest,
    find_phase_learning_rate,
    reshuffled,
    write_range_test,
)
from transferlab.training.optim import class_weights
from transferlab.training.phase import make_data, phase1_start, starting_model
from transferlab.training.runtime import set_precision


@dataclass
class LRFindResult:
    """What ``find_learning_rate`` returns: the suggestion and where the plot went."""

    phase: str
    suggestion: float
    run_dir: Path
    wall_time_s: float
    test: RangeTest = field(repr=False)

    def __str__(self) -> str:
        value = f"{self.suggestion:.1e}"
        return (
            f"suggested {self.phase}.learning_rate: {value} (make train-{self.phase} "
            f"SET='{self.phase}.learning_rate={value}'); plot {self.run_dir}/figures/lr_find.png"
        )


def find_learning_rate(cfg: Config) -> LRFindResult:
    """Run the range test for ``cfg.lr_find.phase`` and write its run directory.

    The run directory holds figures/lr_find.png (loss against learning rate, the band
    across seeds, the suggestion), lr_find.csv (every seed's curve), config.json and
    summary.json (suggestion, phase, seeds, steps, wall time).
    """
    phase = cfg.lr_find.phase
    started = time.perf_counter()
    test = phase1_range_test(cfg) if phase == "phase1" else phase2_range_test(cfg)
    wall = round(time.perf_counter() - started, 2)
    # Written only once the test has finished: no half-done run looks complete.
    run_dir = new_run_dir(cfg.output_dir, cfg.experiment, "lr_find")
    cfg.save(run_dir / "config.json")
    title = f"{cfg.experiment} {phase}: learning-rate range test"
    write_range_test(test, run_dir / "figures" / "lr_find.png", run_dir / "lr_find.csv", title)
    write_json(
        run_dir / "summary.json",
        {
            "experiment": cfg.experiment,
            "phase": phase,
            "suggestion": test.suggestion,
            "rule": test.rule,
            "seeds": test.seeds,
            "steps": cfg.lr_find.steps,
            "steps_run": [len(c) for c in test.curves],
            "min_lr": cfg.lr_find.min_lr,
            "max_lr": cfg.lr_find.max_lr,
            "wall_time_s": wall,
            "run_dir": str(run_dir),
        },
    )
    return LRFindResult(phase, test.suggestion, run_dir, wall, test)


def phase1_range_test(cfg: Config, table: FeatureTable | None = None) -> RangeTest:
    """The range test of phase 1's head on the cached features of the training split."""
    set_precision(cfg.train.mixed_precision)
    table = table if table is not None else backbone_features(cfg)
    rows = table.rows("train")
    keras.utils.set_random_seed(cfg.seed)  # the head's starting weights, as train_head's
    head = build_head_model(
        cfg, table.num_classes, table.features.shape[1], metadata_stats_of(cfg, table, rows)
    )
    batch = cfg.train.batch_size
    needed = cfg.lr_find.steps * batch

    def batches(seed: int) -> tf.data.Dataset:
        order = shuffled_rows(rows, needed, seed)
        pairs = (table.inputs(order), table.one_hot(order))
        return tf.data.Dataset.from_tensor_slices(pairs).batch(batch)

    weights = class_weights(cfg, table.labels[rows], table.num_classes)
    return find_phase_learning_rate(cfg, "phase1", head, batches, weights)


def with_head_learning_rate(cfg: Config, table: FeatureTable | None = None) -> Config:
    """``cfg``, or a copy whose ``phase1.learning_rate=auto`` is the phase-1 finder's
    suggestion: for what trains heads on the cached features (sweeps, cross-validation)."""
    if cfg.phase1.learning_rate != "auto":
        return cfg
    resolved = copy.deepcopy(cfg)
    resolved.phase1.learning_rate = phase1_range_test(cfg, table).suggestion
    return resolved


def shuffled_rows(rows: np.ndarray, count: int, seed: int) -> np.ndarray:
    """``count`` rows, epoch after epoch, each epoch in its own seeded order."""
    rng = np.random.default_rng(seed)
    epochs = -(-count // len(rows))
    return np.concatenate([rng.permutation(rows) for _ in range(epochs)])[:count]


def phase2_range_test(cfg: Config) -> RangeTest:
    """The range test of the full model as phase 2 starts it, on the training images."""
    phase1_start(cfg, "phase2")  # says what to run first when phase 1 has no best model
    set_precision(cfg.train.mixed_precision)
    dataset = load_dataset(cfg)
    splits = prepare_splits(cfg, dataset)
    size = input_size_for(cfg, dataset)
    num_classes = dataset.num_classes
    model = starting_model(cfg, "phase2", num_classes, size)
    data = make_data(cfg, dataset, splits, size, None, num_classes, (0, 1))
    weights = class_weights(cfg, labels_of(dataset, splits.train), num_classes)
    return find_phase_learning_rate(cfg, "phase2", model, reshuffled(data.train), weights)
