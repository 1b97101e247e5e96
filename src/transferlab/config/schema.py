"""The experiment config's schema: one dataclass per section, each checking its values."""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

# The augmentation names, defined here once. Per-image ones are layers in the model
# (models.AUGMENTATION_LAYERS builds them); batch ones mix whole batches in the pipeline.
IMAGE_AUGMENTATIONS = (
    "flip",
    "rotation",
    "zoom",
    "translation",
    "contrast",
    "brightness",
    "randaugment",
)
BATCH_AUGMENTATIONS = ("mixup", "cutmix")
AUGMENTATIONS = IMAGE_AUGMENTATIONS + BATCH_AUGMENTATIONS
# Augmentations that move pixels (randaugment rotates, shears and translates).
GEOMETRIC_AUGMENTATIONS = ("flip", "rotation", "zoom", "translation", "randaugment")
# Augmentations whose Keras layers cannot be XLA-compiled (supports_jit=False: their
# image transforms have no XLA kernel); Keras would quietly train without XLA.
XLA_INCOMPATIBLE_AUGMENTATIONS = ("rotation", "zoom", "translation", "randaugment")


class ConfigError(ValueError):
    """A config file or override that cannot be used as it is."""


def switch(on: str, off: str) -> dict:
    """Field metadata for a text key that also takes on/off, yes/no, true/false.

    YAML reads those words as booleans, so ``SET='train.mixed_precision=off'`` arrives
    as False; loading turns True into ``on`` and False into ``off``.
    """
    return {"switch": {True: on, False: off}}


@dataclass
class DataConfig:
    kind: Literal["cifar10", "folder", "csv", "digits"] = "digits"
    # Names outputs/splits/<name>/; defaults to the kind.
    name: str = ""
    # cifar10: folder holding cifar-10-batches-py (or -bin); folder: one sub-folder per
    # class; csv: a CSV file, or a folder with train.csv/val.csv/test.csv.
    data_dir: str | None = None
    # Per-class cap on the training pool (800 -> 8,000 CIFAR-10 training images).
    subset_per_class: int | None = None
    # train/val/test fractions; cifar10 keeps its official test set and splits the rest.
    splits: list[float] = field(default_factory=lambda: [0.7, 0.15, 0.15])
    # Side the input pipeline resizes images to before the model; defaults to the images'
    # own size for in-memory datasets (CIFAR-10 stays 32, the model resizes) and to
    # model.image_size for files.
    input_size: int | None = None
    # CSV column names.
    path_column: str = "path"
    label_column: str = "label"
    group_column: str | None = None
    # csv only: numeric columns fed to fusion models, and a column of boxes per image
    # ("x,y,w,h; x,y,w,h" or [[x, y, w, h], ...]) in box_units, padded/cut to max_boxes.
    metadata_columns: list[str] = field(default_factory=list)
    boxes_column: str | None = None
    box_units: Literal["pixels", "relative"] = "pixels"
    max_boxes: int = 4
    # A CSV of decisions (path or sample_id, action drop|relabel|keep, new_label) applied
    # at load; notebooks/09_data_health.ipynb writes it. Nothing on disk is changed.
    corrections: str | None = None

    def check(self) -> None:
        if len(self.splits) != 3 or any(f < 0 for f in self.splits):
            raise ConfigError(
                f"data.splits={self.splits}: give three non-negative fractions "
                "[train, val, test], e.g. [0.7, 0.15, 0.15]"
            )
        if abs(sum(self.splits) - 1.0) > 1e-6:
            raise ConfigError(
                f"data.splits={self.splits} sums to {sum(self.splits):g}; it must sum to 1"
            )
        if self.splits[0] == 0 or self.splits[1] == 0:
            raise ConfigError(f"data.splits={self.splits}: train and val fractions must be above 0")
        check_min("data.subset_per_class", self.subset_per_class, 1)
        check_min("data.input_size", self.input_size, 8)
        check_min("data.max_boxes", self.max_boxes, 1)
        if (self.metadata_columns or self.boxes_column) and self.kind != "csv":
            raise ConfigError(
                "data.metadata_columns and data.boxes_column need data.kind=csv "
                f"(got data.kind={self.kind})"
            )
        if self.kind in ("folder", "csv") and not self.data_dir:
            raise ConfigError(f"data.kind={self.kind} needs data.data_dir (a path to your data)")


@dataclass
class ModelConfig:
    backbone: str = "resnet50"
    # "imagenet" (Keras downloads it once), "none" (random init) or a path to a weights file.
    weights: str = "imagenet"
    image_size: int = 224
    pooling: Literal["avg", "max"] = "avg"
    dropout: float = 0.2
    dense_units: int = 0
    augmentation: list[str] = field(default_factory=list)
    # "image": pixels only; "fusion": pooled image features + encoded metadata and boxes;
    # "roi": the image cropped to one box (or masked by all boxes) before the resize layer.
    inputs: Literal["image", "fusion", "roi"] = "image"
    # fusion: width of the Dense layer that encodes metadata and boxes.
    side_units: int = 32
    # roi: crop to the "largest" box or to box number roi_index ("index"), or keep only
    # the pixels inside any box ("mask"); crops grow by roi_margin of the box's size per side.
    roi: Literal["largest", "index", "mask"] = "largest"
    roi_index: int = 0
    roi_margin: float = 0.1

    def check(self) -> None:
        check_min("model.image_size", self.image_size, 8)
        check_min("model.side_units", self.side_units, 1)
        check_min("model.roi_index", self.roi_index, 0)
        if not 0.0 <= self.roi_margin <= 1.0:
            raise ConfigError(f"model.roi_margin={self.roi_margin}: must be in [0, 1]")
        check_min("model.dense_units", self.dense_units, 0)
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout={self.dropout}: must be in [0, 1)")
        for name in self.augmentation:
            if name not in AUGMENTATIONS:
                raise ConfigError(
                    f"model.augmentation: unknown augmentation {name!r}"
                    f"{did_you_mean(name, AUGMENTATIONS)}; allowed: {', '.join(AUGMENTATIONS)}"
                )


@dataclass
class PhaseConfig:
    epochs: int = 10
    # A number, or "auto": the learning-rate finder's suggestion (make lr-find), found
    # when the phase starts and recorded in config.json and summary.json.
    learning_rate: float | Literal["auto"] = 1e-3
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    weight_decay: float = 1e-4
    momentum: float = 0.9
    schedule: Literal["constant", "cosine", "onecycle", "plateau"] = "constant"
    warmup_epochs: int = 0
    # Early-stopping patience in epochs; 0 turns early stopping off.
    patience: int = 5
    # First backbone stage to train ("conv5", "conv4", "all"); None keeps it frozen. Set
    # for phase 1, the phase trains end to end from that stage (no feature cache).
    unfreeze_from: str | None = None

    def check(self, section: str) -> None:
        check_min(f"{section}.epochs", self.epochs, 0)
        check_min(f"{section}.warmup_epochs", self.warmup_epochs, 0)
        if self.warmup_epochs and self.schedule != "cosine":
            # onecycle warms up by itself; constant and plateau have no warm-up.
            raise ConfigError(
                f"{section}.warmup_epochs={self.warmup_epochs} is used only by the cosine "
                f"schedule; {section}.schedule={self.schedule} would ignore it. Set "
                f"{section}.schedule=cosine, or {section}.warmup_epochs=0"
            )
        check_min(f"{section}.patience", self.patience, 0)
        if self.learning_rate != "auto" and not 0 < self.learning_rate < 1:
            raise ConfigError(f"{section}.learning_rate={self.learning_rate}: must be in (0, 1)")


@dataclass
class TrainConfig:
    batch_size: int = 64
    monitor: Literal["val_accuracy", "val_macro_f1"] = "val_accuracy"
    label_smoothing: float = 0.0
    class_weight: Literal["none", "balanced"] = "none"
    clip_norm: float | None = None
    # "auto": bfloat16 on GPUs of compute capability 8.0 or more (A100, H100, RTX 30xx+),
    # float16 on older GPUs, float32 on a CPU. "float16", "bfloat16" force that mixed
    # precision anywhere; "off" is float32. "on" (or true) is float16, as it always was.
    mixed_precision: Literal["auto", "float16", "bfloat16", "off", "on"] = field(
        default="auto", metadata=switch(on="on", off="off")
    )
    xla: bool = False
    # Freeze once: when no augmentation is active, the frozen layers before a phase's
    # first trainable one run once per image and the rest trains on their cached outputs
    # (phase 1: pooled backbone features; phase 2 from conv5: conv4's output).
    cache_features: bool = True
    # Training steps per call into the compiled graph. "auto": 32 when training on cached
    # outputs (each step is small; a Python round trip per step would dominate), 1 end to
    # end. Lowered to a divisor of the epoch's steps.
    steps_per_execution: int | Literal["auto"] = "auto"
    # Deterministic ops: a run, interrupted and resumed or not, gives the same weights bit
    # for bit (slower on a GPU). Shuffling and dropout are seeded per epoch either way.
    deterministic: bool = False

    def check(self) -> None:
        check_min("train.batch_size", self.batch_size, 1)
        if self.steps_per_execution != "auto":
            check_min("train.steps_per_execution", self.steps_per_execution, 1)
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"train.label_smoothing={self.label_smoothing}: must be in [0, 1)")
        if self.clip_norm is not None and self.clip_norm <= 0:
            raise ConfigError(f"train.clip_norm={self.clip_norm}: must be above 0, or null")


@dataclass
class EvalConfig:
    split: Literal["val", "test"] = "test"
    top_k: int = 5
    # Test-time augmentation passes (0 = off).
    tta: int = 0
    gradcam_layer: str | None = None
    gradcam_images: int = 8
    # Intervals: Wilson for accuracy, a stratified bootstrap (seeded with `seed`) of this
    # many resamples for macro-F1, balanced accuracy and ROC AUC.
    confidence: float = 0.95
    bootstrap: int = 1000
    # Fit temperature scaling on the val split; predict and export then use it.
    calibrate: bool = False
    calibration_bins: int = 15
    # Also report the test metrics without the images in a cross-split near-duplicate
    # group (found by make data-health), as metrics.json's "without_near_duplicates".
    exclude_near_duplicates: bool = False

    def check(self) -> None:
        check_min("eval.top_k", self.top_k, 1)
        check_min("eval.tta", self.tta, 0)
        check_min("eval.gradcam_images", self.gradcam_images, 1)
        check_min("eval.bootstrap", self.bootstrap, 100)
        check_min("eval.calibration_bins", self.calibration_bins, 2)
        if not 0.5 <= self.confidence < 1:
            raise ConfigError(f"eval.confidence={self.confidence}: must be in [0.5, 1), e.g. 0.95")


@dataclass
class PredictConfig:
    # A photo or a folder of photos to classify (make predict DATA=...).
    data: str | None = None
    # Classes listed per photo in predictions.csv, most likely first.
    top_k: int = 3
    # Photos drawn with their Grad-CAM overlay on the predictions page.
    gradcam_images: int = 16

    def check(self) -> None:
        check_min("predict.top_k", self.top_k, 1)
        check_min("predict.gradcam_images", self.gradcam_images, 0)


@dataclass
class CompareConfig:
    # Evaluate run ids (folder names under outputs/runs/) to compare; empty: the
    # experiment's latest evaluate run of each model (make compare RUNS='id id ...').
    runs: list[str] = field(default_factory=list)
    # Paired tests: p below this is a detectable difference.
    alpha: float = 0.05

    def check(self) -> None:
        if not 0 < self.alpha < 0.5:
            raise ConfigError(f"compare.alpha={self.alpha}: must be in (0, 0.5), e.g. 0.05")


@dataclass
class LRFindConfig:
    # The phase whose learning rate is searched (make lr-find PHASE=phase2).
    phase: Literal["phase1", "phase2"] = "phase1"
    min_lr: float = 1e-7
    max_lr: float = 1.0
    # Steps of the exponential range test, and how many seeds repeat it.
    steps: int = 100
    seeds: int = 3

    def check(self) -> None:
        check_min("lr_find.steps", self.steps, 10)
        check_min("lr_find.seeds", self.seeds, 1)
        if not 0 < self.min_lr < self.max_lr:
            raise ConfigError(
                f"lr_find.min_lr={self.min_lr}, lr_find.max_lr={self.max_lr}: need "
                "0 < min_lr < max_lr"
            )


@dataclass
class SweepConfig:
    """``make sweep``: an Optuna study over the head's settings, on cached features.

    Each range is [low, high] (a number range, log-scaled for learning_rate and
    weight_decay) and each choice a list; give one value to fix a setting.
    """

    trials: int = 20
    # Optuna storage URL shared by every worker; empty: SQLite under outputs/sweeps/.
    storage: str = ""
    # Study name; empty: <experiment>_sweep.
    study: str = ""
    # Worker processes on this machine, each running trials of the same study.
    workers: int = 1
    learning_rate: list[float] = field(default_factory=lambda: [1e-4, 3e-2])
    weight_decay: list[float] = field(default_factory=lambda: [1e-6, 1e-2])
    dropout: list[float] = field(default_factory=lambda: [0.0, 0.5])
    label_smoothing: list[float] = field(default_factory=lambda: [0.0, 0.2])
    class_weight: list[Literal["none", "balanced"]] = field(
        default_factory=lambda: ["none", "balanced"]
    )
    optimizer: list[Literal["adam", "adamw", "sgd"]] = field(
        default_factory=lambda: ["adam", "adamw", "sgd"]
    )
    epochs: list[int] = field(default_factory=lambda: [5, 30])

    def check(self) -> None:
        check_min("sweep.trials", self.trials, 1)
        check_min("sweep.workers", self.workers, 1)
        for key in ("learning_rate", "weight_decay", "dropout", "label_smoothing", "epochs"):
            values = getattr(self, key)
            if len(values) not in (1, 2) or values[0] > values[-1]:
                raise ConfigError(
                    f"sweep.{key}={values}: give [low, high] with low <= high, or one value"
                )
        for key in ("class_weight", "optimizer"):
            if not getattr(self, key):
                raise ConfigError(f"sweep.{key}: give at least one choice")
        if self.learning_rate[0] <= 0 or self.learning_rate[-1] >= 1:
            raise ConfigError(f"sweep.learning_rate={self.learning_rate}: must be in (0, 1)")
        if self.weight_decay[0] <= 0:
            raise ConfigError(f"sweep.weight_decay={self.weight_decay}: must be above 0")
        if not 0 <= self.dropout[0] <= self.dropout[-1] < 1:
            raise ConfigError(f"sweep.dropout={self.dropout}: must be in [0, 1)")
        if not 0 <= self.label_smoothing[0] <= self.label_smoothing[-1] < 1:
            raise ConfigError(f"sweep.label_smoothing={self.label_smoothing}: must be in [0, 1)")
        if self.epochs[0] < 1:
            raise ConfigError(f"sweep.epochs={self.epochs}: must be at least 1")


@dataclass
class CVConfig:
    # make cv K=5: stratified (and group-exclusive with data.group_column) folds over
    # train + val; the test split is left alone.
    folds: int = 5
    # Also fine-tune (phase 2) in every fold: slow, off by default.
    phase2: bool = False

    def check(self) -> None:
        check_min("cv.folds", self.folds, 2)


@dataclass
class HealthConfig:
    """``make data-health``: near-duplicates, likely label errors, outliers."""

    # Cosine similarity of two images' perceptual descriptors from which they are
    # near-duplicates (copies of photos 64 px or larger re-encoded, resized or cropped a
    # little stay above ~0.8; images under 40 px or plain ones are left out: see
    # data/health/duplicates.py).
    duplicate_similarity: float = 0.8
    # The same for cached backbone features, where they exist (0 turns that search off).
    feature_similarity: float = 0.98
    # Images per grid on the data-health page and in the notebook.
    shown: int = 24

    def check(self) -> None:
        check_min("health.shown", self.shown, 1)
        for key in ("duplicate_similarity", "feature_similarity"):
            value = getattr(self, key)
            if not 0 <= value < 1:
                raise ConfigError(f"health.{key}={value}: must be in [0, 1), e.g. 0.8")


@dataclass
class TrackingConfig:
    # MLflow tracking URI (a folder, sqlite:///file.db or http://host:5000), or "on" for
    # sqlite:///<output_dir>/mlflow.db; empty (or off) turns tracking off.
    mlflow: str = field(default="", metadata=switch(on="on", off=""))


@dataclass
class ReportConfig:
    project: str = "transferlab"
    sprint: int = 1
    day: int = 1
    output_dir: str = "docs/checkpoints"
    # Accuracy the gap analysis measures against.
    target_accuracy: float = 0.9
    # Optional YAML journal with completed tasks, decisions and next priorities.
    journal: str | None = None

    def check(self) -> None:
        if not 0 < self.target_accuracy <= 1:
            raise ConfigError(f"report.target_accuracy={self.target_accuracy}: must be in (0, 1]")


@dataclass
class BenchConfig:
    """Sizes of `make bench`; the defaults finish in under 10 minutes on a 2-core CPU."""

    # Timed runs per figure; each figure is their median with min and max.
    repeats: int = 3
    # Batch size of the model-speed and pipeline benchmarks.
    batch_size: int = 16
    # Frozen phase: N synthetic images (train + val); one run of max(frozen_epochs) epochs
    # per arm gives every E. N is large enough that an epoch outweighs the fixed costs
    # (model build, tracing, saving), small enough that 30 end-to-end epochs take 2 min.
    frozen_images: int = 512
    frozen_epochs: list[int] = field(default_factory=lambda: [10, 30])
    frozen_image_size: int = 64
    # Phase 2 from conv5: epochs per arm (conv4's output cached, and end to end; the first
    # also traces), on N synthetic images at the real experiment's 224 px, where an epoch's
    # steps, not its fixed checkpoint commit, are what a user waits for; 0 leaves it out.
    phase2_epochs: int = 3
    phase2_images: int = 160
    phase2_image_size: int = 224
    # Sweep: this many trials of min(frozen_epochs) epochs each on the frozen phase's images,
    # timed against its end-to-end phase 1 of as many epochs.
    sweep_trials: int = 20
    # Input pipeline: streams N, 2N and 4N JPEGs of side file_size from disk.
    pipeline_images: int = 256
    file_size: int = 256
    # Evaluate (TTA on) on a folder of N and 4N JPEGs: peak memory must not grow with N.
    eval_images: int = 64
    # Folder scan: the first scan of this many files against the second.
    scan_files: int = 20000
    # Data health: near-duplicate search timed at N and 4N synthetic pictures.
    health_images: int = 2500
    # Image sides of the model-speed benchmark, besides model.image_size.
    model_sizes: list[int] = field(default_factory=lambda: [224])
    # Square matmul sizes for the measured float32 peak (the best median wins).
    matmul_sizes: list[int] = field(default_factory=lambda: [512, 1024, 2048])
    # Markdown summary table; JSON and CSV go to <output_dir>/bench/.
    summary: str = "docs/benchmarks.md"

    def check(self) -> None:
        check_min("bench.repeats", self.repeats, 1)
        check_min("bench.batch_size", self.batch_size, 1)
        check_min("bench.frozen_images", self.frozen_images, 4)
        check_min("bench.frozen_image_size", self.frozen_image_size, 8)
        check_min("bench.phase2_epochs", self.phase2_epochs, 0)
        check_min("bench.phase2_images", self.phase2_images, 4)
        check_min("bench.phase2_image_size", self.phase2_image_size, 8)
        check_min("bench.sweep_trials", self.sweep_trials, 1)
        check_min("bench.pipeline_images", self.pipeline_images, 1)
        check_min("bench.file_size", self.file_size, 8)
        check_min("bench.eval_images", self.eval_images, 20)
        check_min("bench.scan_files", self.scan_files, 1)
        check_min("bench.health_images", self.health_images, 20)
        if not self.frozen_epochs or min(self.frozen_epochs) < 1:
            raise ConfigError(
                f"bench.frozen_epochs={self.frozen_epochs}: give epoch counts of at least 1"
            )
        if self.model_sizes and min(self.model_sizes) < 8:
            raise ConfigError(f"bench.model_sizes={self.model_sizes}: sizes must be at least 8")
        if not self.matmul_sizes or min(self.matmul_sizes) < 1:
            raise ConfigError(f"bench.matmul_sizes={self.matmul_sizes}: give positive sizes")


@dataclass
class Config:
    experiment: str = "demo"
    seed: int = 42
    output_dir: str = "outputs"
    models_dir: str = "models"
    checkpoints_dir: str = "checkpoints"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    phase1: PhaseConfig = field(default_factory=PhaseConfig)
    phase2: PhaseConfig = field(
        default_factory=lambda: PhaseConfig(epochs=10, learning_rate=1e-4, unfreeze_from="conv5")
    )
    eval: EvalConfig = field(default_factory=EvalConfig)
    predict: PredictConfig = field(default_factory=PredictConfig)
    compare: CompareConfig = field(default_factory=CompareConfig)
    lr_find: LRFindConfig = field(default_factory=LRFindConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    cv: CVConfig = field(default_factory=CVConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)

    def check(self) -> None:
        if not self.experiment or any(c in self.experiment for c in "/\\ "):
            raise ConfigError(
                f"experiment={self.experiment!r}: use a short name without spaces or slashes"
            )
        self.data.check()
        self.model.check()
        self.train.check()
        self.phase1.check("phase1")
        self.phase2.check("phase2")
        self.eval.check()
        self.predict.check()
        self.compare.check()
        self.lr_find.check()
        self.sweep.check()
        self.cv.check()
        self.health.check()
        self.report.check()
        self.bench.check()
        self.check_inputs()
        self.check_xla()

    def check_inputs(self) -> None:
        """model.inputs needs the data columns it reads; batch mixing needs images alone."""
        mode, data = self.model.inputs, self.data
        if mode == "fusion" and not (data.metadata_columns or data.boxes_column):
            raise ConfigError(
                "model.inputs=fusion needs data.metadata_columns and/or data.boxes_column "
                "(a CSV dataset with those columns)"
            )
        if mode == "roi" and not data.boxes_column:
            raise ConfigError("model.inputs=roi needs data.boxes_column (a CSV column of boxes)")
        if mode == "roi" and self.model.roi == "index" and self.model.roi_index >= data.max_boxes:
            raise ConfigError(
                f"model.roi_index={self.model.roi_index} must be below "
                f"data.max_boxes={data.max_boxes}"
            )
        mixing = sorted(set(self.model.augmentation) & set(BATCH_AUGMENTATIONS))
        if self.train.deterministic and mixing:
            raise ConfigError(
                f"train.deterministic cannot replay model.augmentation {mixing} (they draw "
                "their mixing from the input pipeline's own random state); drop them or set "
                "train.deterministic=false"
            )
        if mode != "image" and mixing:
            raise ConfigError(
                f"model.augmentation {mixing} mixes images only; with model.inputs={mode} "
                "use per-image augmentations (flip, rotation, ...)"
            )
        moving = [a for a in self.model.augmentation if a in GEOMETRIC_AUGMENTATIONS]
        if mode == "fusion" and data.boxes_column and moving:
            # ROI models crop before augmenting, so only fusion feeds boxes beside moved pixels.
            raise ConfigError(
                f"model.augmentation {moving} moves the pixels, but a fusion model reads the "
                f"boxes (data.boxes_column={data.boxes_column}) as numbers that would not move "
                "with them. Use contrast or brightness, or model.inputs=roi (it crops to the "
                "box before augmenting), or fusion on metadata alone (no data.boxes_column)"
            )

    def check_xla(self) -> None:
        """Refuse train.xla with an augmentation Keras cannot compile (it would drop XLA)."""
        blocking = [a for a in self.model.augmentation if a in XLA_INCOMPATIBLE_AUGMENTATIONS]
        if self.train.xla and blocking:
            compilable = [a for a in AUGMENTATIONS if a not in XLA_INCOMPATIBLE_AUGMENTATIONS]
            raise ConfigError(
                f"train.xla=true cannot compile model.augmentation {blocking} (Keras has no "
                "XLA kernel for their image transforms and would quietly train without "
                f"XLA). Set train.xla=false, or augment with {', '.join(compilable)} only"
            )
        if self.train.xla and self.train.deterministic:
            raise ConfigError(
                "train.xla=true and train.deterministic=true cannot run together: Keras "
                "quietly turns XLA off while TensorFlow's op determinism is on. Choose one "
                "(train.xla=false for bit-exact resumes, or train.deterministic=false)"
            )

    @property
    def model_name(self) -> str:
        """Names model and checkpoint files: the experiment, with the input mode unless image.

        Runs of one experiment with model.inputs image, fusion and roi then keep their own
        models side by side, for the report to compare.
        """
        mode = self.model.inputs
        return self.experiment if mode == "image" else f"{self.experiment}_{mode}"

    @property
    def dataset_name(self) -> str:
        return self.data.name or self.data.kind

    def phase(self, name: str) -> PhaseConfig:
        if name not in ("phase1", "phase2"):
            raise ConfigError(f"phase={name!r}: use 'phase1' or 'phase2'")
        return getattr(self, name)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> Path:
        """Write the resolved config as JSON (next to a run's weights and metrics)."""
        from transferlab.runs import write_json

        return write_json(path, self.to_dict())


def did_you_mean(
    word: str, *candidate_lists: list[str] | tuple[str, ...], cutoff: float = 0.5
) -> str:
    """``"; did you mean 'x'?"`` for the closest candidate (first list first), or ``""``."""
    for candidates in candidate_lists:
        close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=cutoff)
        if close:
            return f"; did you mean {close[0]!r}?"
    return ""


def check_min(key: str, value: int | None, minimum: int) -> None:
    if value is not None and value < minimum:
        raise ConfigError(f"{key}={value}: must be at least {minimum}")
