"""``train_phase(cfg, phase)``: phase 1 (frozen backbone) and phase 2 (fine-tuning).

Phase 1 trains the head on a frozen backbone (or, with ``phase1.unfreeze_from``, from
that stage on). Phase 2 loads phase 1's best model, unfreezes from
``phase2.unfreeze_from`` (BatchNorm stays frozen) and recompiles at its own, lower
learning rate. Both resume after a crash or Ctrl-C.

Both follow one recipe, freeze once: the model splits at its first trainable layer;
when no augmentation changes the images, the frozen prefix runs once per image, its
outputs are cached and the trainable suffix trains on them (phase 1: the head on pooled
features; phase 2 from conv5: conv5 and the head on conv4's output). Checkpoints hold
what trains; the full best model is assembled from the best one when the phase stops.
Otherwise the phase trains end to end, and its log line says why.
"""

from __future__ import annotations

import importlib.util
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tensorflow.python.framework.config import disable_op_determinism  # no tf.config alias

import transferlab
from transferlab.config import Config
from transferlab.config.schema import BATCH_AUGMENTATIONS
from transferlab.data import Splits, load_dataset, prepare_splits
from transferlab.data.pipeline import (
    batches_for_replicas,
    input_size_for,
    labels_of,
    make_tf_dataset,
)
from transferlab.data.splits import write_skipped
from transferlab.models import (
    backbone_of,
    build_model,
    freeze_backbone,
    get_backbone,
    load_model,
    side_input_names,
    unfreeze_from,
)
from transferlab.models.split import copy_weights, find_cut, prefix_model, suffix_model
from transferlab.progress import EpochProgress, say
from transferlab.runs import (
    PhasePaths,
    new_run_dir,
    read_json,
    read_metrics,
    remove_temporaries,
    write_json,
    write_with,
)
from transferlab.runs.tracking import check_tracking, track_run
from transferlab.training import distributed
from transferlab.training.checkpoints import EpochCheckpoint, ReseedEachEpoch, ResumablePlateau
from transferlab.training.curves import plot_curves
from transferlab.training.features import cache_prefix, cached_datasets, metadata_stats
from transferlab.training.lr_range import resolve_learning_rate
from transferlab.training.optim import class_weights, compile_model, make_optimizer
from transferlab.training.runtime import choose_strategy, describe_device, is_chief, set_precision
from transferlab.training.state import (
    PhaseLock,
    PhaseState,
    file_hash,
    fingerprint,
    load_state,
    new_state,
    save_state,
)
from transferlab.training.val_predictions import write_val_predictions


class TrainingError(RuntimeError):
    """Training that cannot go on (e.g. the loss became NaN); the message says what to try."""


@dataclass
class RunResult:
    """What ``train_phase`` returns: where things went and how the phase ended."""

    phase: str
    run_dir: Path
    model_path: Path
    best_epoch: int
    best_metrics: dict
    epochs_run: int
    stop_reason: str
    summary: dict = field(repr=False, default_factory=dict)

    def __str__(self) -> str:
        monitor = self.summary.get("monitor", "val_accuracy")
        value = self.best_metrics.get(monitor, math.nan)
        xla = ", XLA" if self.summary.get("xla") else ""
        ran = self.summary.get("precision", "float32") + xla
        if self.summary.get("kept_phase1"):
            # No epoch beat phase 1 (best_epoch 0, no metrics): say so instead of "nan".
            return (
                f"{self.phase}: no epoch of {self.epochs_run} beat phase 1's best {monitor} "
                f"{self.summary['phase1_best']:.4f} ({self.stop_reason}; {ran}); kept "
                f"phase 1's model {self.model_path}; run {self.run_dir}"
            )
        return (
            f"{self.phase}: best {monitor} {value:.4f} at epoch {self.best_epoch} of "
            f"{self.epochs_run} ({self.stop_reason}; {ran}); model {self.model_path}; "
            f"run {self.run_dir}"
        )


@dataclass
class Data:
    splits: Splits
    input_size: int
    train: tf.data.Dataset
    val: tf.data.Dataset
    steps_per_epoch: int
    feature_cache_s: float = 0.0
    prefix_key: str = ""
    cache_where: str = ""


def train_phase(
    cfg: Config,
    phase: str,
    strategy: tf.distribute.Strategy | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
) -> RunResult:
    """Train ``phase`` ("phase1" or "phase2"), resuming an interrupted run of it.

    ``callbacks`` are Keras callbacks of your own; they run after transferlab's, so at
    each epoch's end they see its metrics row and checkpoint already written.

    Writes models/<experiment>_<phase>_best.keras, checkpoints/<experiment>/ (the phase
    state and the checkpoints it names) and a run directory with config.json,
    metrics.csv, summary.json, figures/training_curves.png and tensorboard/ logs.
    Phase 2 keeps phase 1's model as the best unless it beats phase 1's best score.
    """
    # Under KERAS_BACKEND=jax: join the other processes, then refuse what cannot run.
    distributed.start(cfg)
    distributed.check_backend(cfg, strategy)
    paths = PhasePaths.of(cfg, phase)
    lock = PhaseLock(paths.lock, f"{phase} of experiment {cfg.model_name!r}")
    with distributed.lock_if_chief(lock):
        return run_phase(cfg, phase, paths, strategy, callbacks)


def run_phase(cfg, phase, paths, strategy, callbacks) -> RunResult:
    phase_cfg = cfg.phase(phase)
    started = time.perf_counter()
    check_tracking(cfg)  # an unreachable MLflow store stops the phase before any work
    if is_chief():
        remove_killed_writes(paths, phase)
    start = phase1_start(cfg, phase)
    configure_randomness(cfg)
    set_precision(cfg.train.mixed_precision)
    strategy = strategy or choose_strategy()
    dataset = load_dataset(cfg)
    splits = prepare_splits(cfg, dataset)
    # The chief starts (or resumes) the run; other processes then read the state it wrote.
    state = distributed.chief_first(
        lambda: start_or_resume(cfg, phase, paths, dataset, start),
        lambda: load_state(paths, fingerprint(cfg, phase), start.model_hash),
        f"the start of {phase}",
    )
    run_dir = Path(state.run_dir)
    num_classes = dataset.num_classes

    with strategy.scope():
        size = input_size_for(cfg, dataset)
        stats = metadata_stats(cfg, dataset, splits)
        # The recipe: the full model this phase starts from; where it splits (the frozen
        # prefix runs once per image, the trainable suffix trains on its outputs); the
        # model fit trains; the best checkpoint put back onto the full model at the end.
        full = starting_model(cfg, phase, num_classes, size, stats)
        plan = plan_freeze_once(cfg, phase, full)
        say(plan.describe(phase))
        state.feature_cached = plan.cached
        epochs = (state.epoch, phase_cfg.epochs)
        data = make_data(
            cfg,
            dataset,
            splits,
            size,
            plan,
            num_classes,
            epochs,
            distributed.replicas(strategy),
            (distributed.process_index(), distributed.process_count()),
        )
        check_same_prefix(state, data.prefix_key, paths)
        # learning_rate=auto becomes a number here (a resumed run reuses its own), before
        # the optimizer, the plateau callback or the summary read it.
        cfg, lr_facts = resolve_learning_rate(
            cfg,
            phase,
            run_dir,
            lambda: plan.trained,
            data.train,
            class_weights(cfg, labels_of(dataset, splits.train), num_classes),
            write=is_chief(),
        )
        phase_cfg = cfg.phase(phase)
        checkpointed, trainer = compiled_trainer(cfg, phase_cfg, paths, state, plan, data)

    rows = [r for r in read_metrics(run_dir / "metrics.csv") if r["epoch"] <= state.epoch]
    own_callbacks, checkpoint = make_callbacks(
        cfg, phase_cfg, paths, state, rows, run_dir, checkpointed
    )
    if is_chief():
        own_callbacks.append(EpochProgress(phase, phase_cfg.epochs))
    last_epoch = state.epoch if state.stop_reason == "early_stopping" else phase_cfg.epochs
    stop_reason = "completed"
    try:
        trainer.fit(
            data.train,
            validation_data=data.val,
            epochs=last_epoch,
            initial_epoch=min(state.epoch, last_epoch),
            steps_per_epoch=data.steps_per_epoch,
            callbacks=[*own_callbacks, *callbacks],
            class_weight=class_weights(cfg, labels_of(dataset, splits.train), num_classes),
            shuffle=False,  # the tf.data pipeline shuffles, per epoch
            verbose=0,  # EpochProgress reports, a line per epoch
        )
    except KeyboardInterrupt:
        stop_reason = "interrupted"
        print(
            f"[transferlab] interrupted; {state.epoch} epoch(s) saved. Run the same "
            f"command again to resume {phase}.",
            flush=True,
        )
    if is_chief():
        # Before the state says "finished": a kill in between leaves a run that resumes
        # with no epoch left to run and publishes the best model then.
        with distributed.local_only():  # saving on the chief alone
            if distributed.process_count() > 1 and state.best_file:
                # Across processes fit trains the full model (no freeze once): its best
                # checkpoint is the model; copying weights onto `full` would be collective.
                distributed.publish_checkpoint(paths.folder / state.best_file, paths.best)
            else:
                publish_best(paths, state, full, phase, stop_reason)
    if checkpoint.nan_epoch:
        stop_reason = "nan_loss"
    elif state.stop_reason == "early_stopping":
        stop_reason = "early_stopping"
    state.stop_reason = stop_reason
    if stop_reason != "interrupted" and is_chief():
        state.finished = True
        save_state(state, paths)
        # Each validation image's prediction, for the report's paired phase 1 vs 2 test.
        with distributed.local_only():  # the chief alone, on its own device
            write_val_predictions(run_dir, paths, state, data.val, splits.val, dataset.class_names)
    facts = {
        "wall_time_s": round(time.perf_counter() - started, 2),
        "device": describe_device(),
        "replicas": distributed.replicas(strategy),
        "backend": keras.backend.backend(),
        "processes": distributed.process_count(),
        # What ran: the trained layers' dtype policy, and whether Keras compiled with XLA.
        "precision": full.get_layer("logits").dtype_policy.name,
        "xla": bool(trainer.jit_compile),
        # The phase's own model; none when it wrote none (a phase 2 that kept phase 1's).
        "model_path": str(paths.best) if paths.best.is_file() else None,
        # Freeze once: the last frozen layer whose outputs were cached, where they were
        # kept, or why the phase trained end to end.
        "cached_at": plan.cut,
        "prefix_cache": data.cache_where or None,
        "end_to_end_reason": plan.reason or None,
        "steps_per_execution": trainer.steps_per_execution,
        **lr_facts,
        **best_model_of_experiment(paths, state, start),
    }
    summary = write_summary(cfg, state, rows, full, dataset, data, facts)
    if is_chief():
        track_run(cfg, run_dir, phase)
    distributed.barrier(f"{phase} written")  # no process returns before the chief's files exist
    if stop_reason == "nan_loss":
        raise TrainingError(
            f"{phase}: the loss became NaN in epoch {checkpoint.nan_epoch}; training stopped. "
            f"Lower {phase}.learning_rate (now {phase_cfg.learning_rate}), set train.clip_norm "
            "(e.g. 1.0), or try train.mixed_precision=off."
            + (
                f" The best model so far is {summary['best_model_path']}"
                if state.best_epoch
                else ""
            )
        )
    return RunResult(
        phase=phase,
        run_dir=run_dir,
        model_path=Path(summary["best_model_path"]),
        best_epoch=state.best_epoch,
        best_metrics=summary["best_metrics"],
        epochs_run=state.epoch,
        stop_reason=stop_reason,
        summary=summary,
    )


@dataclass
class Phase1Start:
    """What phase 2 starts from: phase 1's best model, its hash and its best score."""

    path: Path | None = None
    model_hash: str = ""
    best: float = -math.inf


def phase1_start(cfg: Config, phase: str) -> Phase1Start:
    if phase == "phase1":
        return Phase1Start()
    phase1 = PhasePaths.of(cfg, "phase1")
    if not phase1.best.is_file():
        raise FileNotFoundError(
            f"phase 2 starts from {phase1.best}, which does not exist: "
            "run `make train-phase1` (same CONFIG and SET) first"
        )
    best = -math.inf
    if phase1.state.is_file():
        try:
            saved = PhaseState.from_dict(read_json(phase1.state))
            if saved.monitor == cfg.train.monitor:
                best = saved.best
        except (ValueError, TypeError):
            pass  # no score to beat: phase 2 keeps its own best
    return Phase1Start(phase1.best, file_hash(phase1.best), best)


def remove_killed_writes(paths: PhasePaths, phase: str) -> None:
    """Delete the hidden temporaries of checkpoints and models a killed run was writing.

    Safe here: the phase lock is held, so no other run of this phase is mid-write.
    """
    removed = remove_temporaries(paths.folder, f"{phase}_")
    removed += remove_temporaries(paths.best.parent, paths.best.name)
    if removed:
        names = ", ".join(p.name for p in removed)
        print(f"[transferlab] removed the half-written file(s) a killed run left: {names}")


def configure_randomness(cfg: Config) -> None:
    """One seed fixes the splits, the initial weights, dropout and the shuffling order.

    ``train.deterministic`` also makes TensorFlow's ops deterministic, so a run, resumed
    or not, gives the same weights bit for bit (at some cost in speed on a GPU).
    """
    keras.utils.set_random_seed(cfg.seed)
    # Process-wide in TensorFlow: set it either way, so a deterministic run earlier in the
    # same process (a notebook kernel, a test session) does not leave it on, which would
    # also switch XLA off.
    if cfg.train.deterministic:
        tf.config.experimental.enable_op_determinism()
    else:
        disable_op_determinism()


def start_or_resume(cfg, phase, paths, dataset, start: Phase1Start) -> PhaseState:
    """The interrupted run's state, or a new run's (saved at once when processes share it)."""
    state = load_state(paths, fingerprint(cfg, phase), start.model_hash)
    if state is not None:
        print(f"[transferlab] resuming {phase} after epoch {state.epoch} in {state.run_dir}")
        return state
    state = begin_run(cfg, phase, paths, dataset, start)
    if distributed.process_count() > 1:
        save_state(state, paths)  # the other processes read its run folder from it
    return state


def begin_run(cfg, phase, paths, dataset, start: Phase1Start) -> PhaseState:
    """A new run directory and a fresh state; the last run's checkpoints go."""
    for old in paths.folder.glob(f"{phase}_e*.keras"):
        old.unlink()
    paths.state.unlink(missing_ok=True)
    if phase == "phase2":
        # A phase 2 best from an earlier run would outlive this run if it never beats phase 1.
        paths.best.unlink(missing_ok=True)
    run_dir = new_run_dir(cfg.output_dir, cfg.experiment, phase)
    cfg.save(run_dir / "config.json")
    write_skipped(run_dir / "skipped.csv", dataset.skipped)
    state = new_state(cfg, phase, run_dir, start.model_hash)
    state.best = start.best  # phase 2 must beat phase 1 to count as better
    return state


def starting_model(cfg, phase, num_classes, input_size, stats=None) -> keras.Model:
    """The full model this phase starts from, frozen and unfrozen as the phase trains it.

    Phase 1: built from the config (same seed and weights every time, so a resumed run
    rebuilds it); phase 2: phase 1's best model. A resumed run's weights come from its
    checkpoint; this model is what they are put back onto.
    """
    if phase == "phase1":
        model = build_model(cfg, num_classes, input_size, stats)
        stage = cfg.phase1.unfreeze_from
        return unfreeze_from(model, stage, cfg.model.backbone) if stage else model
    # Phase 2 trains in its own precision, whatever phase 1's was.
    policy = keras.mixed_precision.dtype_policy().name
    model = load_model(PhasePaths.of(cfg, "phase1").best, policy)
    if model.output_shape[-1] != num_classes:
        raise ValueError(
            f"the phase 1 model predicts {model.output_shape[-1]} classes but the dataset has "
            f"{num_classes}; re-run make train-phase1"
        )
    stage = cfg.phase2.unfreeze_from
    return unfreeze_from(model, stage, cfg.model.backbone) if stage else freeze_backbone(model)


@dataclass
class FreezeOnce:
    """How a phase trains: the frozen prefix once and the suffix on its outputs, or the
    full model end to end (``reason`` says why)."""

    phase: str
    trained: keras.Model  # what fit trains: the suffix, or the full model
    cut: str | None = None  # the last frozen layer, whose outputs are cached
    prefix: keras.Model | None = None
    reason: str = ""

    @property
    def cached(self) -> bool:
        return self.cut is not None

    def describe(self, phase: str) -> str:
        if self.cached:
            return (
                f"{phase}: the frozen layers up to {self.cut} run once per image; the "
                "layers after them train on their cached outputs"
            )
        return f"{phase}: trains end to end: {self.reason}"


def plan_freeze_once(cfg: Config, phase: str, full: keras.Model) -> FreezeOnce:
    """Split ``full`` at its first trainable layer when nothing before it changes per epoch."""
    if not cfg.train.cache_features:
        return FreezeOnce(phase, full, reason="train.cache_features is off")
    if not cfg.phase(phase).epochs:
        return FreezeOnce(phase, full, reason=f"{phase}.epochs is 0: nothing trains")
    if distributed.process_count() > 1:
        return FreezeOnce(
            phase, full, reason="each of several processes reads only its share of the images"
        )
    if cfg.model.augmentation:
        return FreezeOnce(
            phase,
            full,
            reason=f"model.augmentation={cfg.model.augmentation} changes the images every "
            "epoch, so the frozen layers' outputs change too",
        )
    cut = find_cut(full)
    if cut.layer is None:
        return FreezeOnce(phase, full, reason=f"nothing frozen to compute once ({cut.reason})")
    # Fusion's metadata and boxes join after the backbone, so the suffix takes them.
    side = side_input_names(cfg) if cfg.model.inputs == "fusion" else []
    model = full
    if side:
        # Split a copy: a suffix taking the full model's own side inputs would leave the
        # full model's graph unsaveable. The best checkpoint's weights go back onto ``full``.
        # (Image-only models split ``full`` itself: cloning ResNet50 costs over a second.)
        model = keras.models.clone_model(full)
        model.set_weights(full.get_weights())
    inference = get_backbone(cfg.model.backbone).inference_mode
    suffix = suffix_model(model, cut.layer, side, inference)
    return FreezeOnce(phase, suffix, cut.layer, prefix_model(model, cut.layer))


def check_same_prefix(state: PhaseState, key: str, paths: PhasePaths) -> None:
    """Stop a resumed phase whose frozen prefix computes other outputs than before."""
    if not state.prefix_key:
        state.prefix_key = key
    if state.prefix_key != key:
        raise TrainingError(
            f"the interrupted {state.phase} in {paths.state} trained on the outputs of other "
            "frozen layers or other images than this run has (were model.weights, the images "
            f"or phase 1's model replaced?). Delete {paths.state} to start {state.phase} afresh."
        )


def publish_best(paths, state, full, phase, stop_reason) -> None:
    """Write the phase's best model where evaluation and phase 2 read it: the best
    checkpoint's weights (the suffix's, or the full model's) on the full model."""
    if state.best_file:
        copy_weights(load_model(paths.folder / state.best_file), full)
        write_with(paths.best, full.save)
    elif phase == "phase1" and stop_reason == "completed" and state.epoch == 0:
        # No epoch ran (epochs=0): the starting model is the best there is.
        write_with(paths.best, full.save)


def best_model_of_experiment(paths, state, start: Phase1Start) -> dict:
    """Which model is the experiment's best after this phase, for the summary."""
    if start.path is not None and not state.best_file:
        return {
            "best_model_path": str(start.path),
            "best_model_phase": "phase1",
            "kept_phase1": True,
            "phase1_best": start.best,
        }
    found = {"best_model_path": str(paths.best), "best_model_phase": state.phase}
    if start.path is not None:
        found.update(kept_phase1=False, phase1_best=start.best)
    return found


def compiled_trainer(cfg, phase_cfg, paths, state, plan: FreezeOnce, data):
    """The model checkpoints save (ending in the softmax; a resumed run's is its last
    checkpoint) and the compiled view of its logits that ``fit`` trains (the loss reads
    the logits, see ``compile_model``)."""
    steps = steps_per_execution(cfg, plan, data.steps_per_epoch)
    if state.epoch:
        # Resume: weights and optimizer state (moments, step count, learning rate).
        model = keras.models.load_model(paths.folder / state.last_file, safe_mode=True)
        return model, compile_model(model, cfg, model.optimizer, steps)
    optimizer = make_optimizer(phase_cfg, cfg.train.clip_norm, data.steps_per_epoch)
    return plan.trained, compile_model(plan.trained, cfg, optimizer, steps)


def steps_per_execution(cfg: Config, plan: FreezeOnce, steps_per_epoch: int) -> int:
    """Training steps per call into the compiled graph: ``train.steps_per_execution``
    (auto: up to 32 on cached outputs, whose steps are too small to pay a Python round
    trip each; 1 end to end), lowered to a divisor of the epoch's steps so no call runs
    into the next epoch's batches."""
    wanted = cfg.train.steps_per_execution
    if wanted == "auto":
        wanted = 32 if plan.cached else 1
    return max(
        d for d in range(1, min(int(wanted), steps_per_epoch) + 1) if steps_per_epoch % d == 0
    )


def make_data(
    cfg, dataset, splits, size, plan, num_classes, epochs, replicas=1, shard=(0, 1)
) -> Data:
    """Training batches for ``epochs`` (first, end) and validation batches.

    Images, or the frozen prefix's cached outputs when ``plan`` caches them. With several
    replicas, every training batch is full (the remainder of each epoch is dropped) so
    that it splits evenly; validation batches are sized to split evenly too. ``shard=
    (index, processes)``: this process's share of each training batch; every process reads
    the whole (small) validation split, so the metrics are those of one process.
    """
    batch = cfg.train.batch_size
    even = replicas > 1
    steps = len(splits.train) // batch if even else math.ceil(len(splits.train) / batch)

    def one_hot(x, y):
        return x, tf.one_hot(y, num_classes)

    names = side_input_names(cfg)
    if plan is not None and plan.cached:
        cache = cache_prefix(plan.prefix, plan.cut, dataset, splits, size, cfg, plan.phase)
        train, val = cached_datasets(cache, dataset, splits, batch, num_classes, cfg, epochs, even)
        data = Data(splits, size, train, val, steps, cache.seconds, cache.key, cache.where)
    else:
        train = make_tf_dataset(
            dataset,
            splits.train,
            batch,
            size,
            epochs,
            cfg.seed,
            names,
            drop_remainder=even,
            shard=shard,
        )
        train = train.map(one_hot, num_parallel_calls=tf.data.AUTOTUNE)
        mixers = batch_mixers(cfg)
        if mixers:
            train = train.map(mixers, num_parallel_calls=tf.data.AUTOTUNE)
        val = make_tf_dataset(dataset, splits.val, batch, size, side_names=names).map(one_hot)
        data = Data(splits, size, train, val, steps)
    if even:
        data.val = batches_for_replicas(data.val, len(splits.val), batch, replicas)
    return data


def batch_mixers(cfg: Config):
    """MixUp / CutMix on whole batches of (images, one-hot labels), or None."""
    mixers = dict(zip(BATCH_AUGMENTATIONS, (keras.layers.MixUp, keras.layers.CutMix), strict=True))
    layers = [mixers[n](seed=cfg.seed) for n in cfg.model.augmentation if n in mixers]
    if not layers:
        return None

    def mix(images, labels):
        data = {"images": tf.cast(images, tf.float32), "labels": labels}
        for layer in layers:
            data = layer(data, training=True)
        return data["images"], data["labels"]

    return mix


def make_callbacks(cfg, phase_cfg, paths, state, rows, run_dir, checkpointed):
    plateau = None
    callbacks = [ReseedEachEpoch(cfg.seed)]
    if phase_cfg.schedule == "plateau":
        # Before the checkpoint callback, so the saved state includes this epoch's update.
        plateau = ResumablePlateau(
            saved=state.plateau,
            monitor=cfg.train.monitor,
            mode="max",
            factor=0.5,
            patience=max(1, phase_cfg.patience // 2),
            min_lr=phase_cfg.learning_rate / 1000,
        )
        callbacks.append(plateau)
    checkpoint = EpochCheckpoint(
        paths,
        state,
        rows,
        run_dir / "metrics.csv",
        phase_cfg.patience,
        plateau,
        write=is_chief(),
        saved=checkpointed,
    )
    callbacks.append(checkpoint)
    if importlib.util.find_spec("tensorboard") and is_chief():
        callbacks.append(
            keras.callbacks.TensorBoard(str(run_dir / "tensorboard"), write_graph=False)
        )
    return callbacks, checkpoint


def count_params(weights) -> int:
    return int(sum(np.prod(w.shape) for w in weights))


def write_summary(cfg, state, rows, full, dataset, data, facts: dict) -> dict:
    """summary.json and figures/training_curves.png of this phase's run."""
    best_row = next((r for r in rows if r["epoch"] == state.best_epoch), {})
    trainable = count_params(full.trainable_weights)
    total = count_params(full.weights)
    summary = {
        "experiment": cfg.experiment,
        "phase": state.phase,
        "total_params": total,
        "trainable_params": trainable,
        "non_trainable_params": total - trainable,
        "best_epoch": state.best_epoch,
        "best_metrics": best_row,
        "monitor": cfg.train.monitor,
        "epochs_run": state.epoch,
        "stop_reason": state.stop_reason,
        "versions": {
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "transferlab": transferlab.__version__,
        },
        "checkpoint": state.last_file or None,
        "input_size": data.input_size,
        "image_size": cfg.model.image_size,
        "backbone": cfg.model.backbone,
        "inputs": cfg.model.inputs,
        "side_inputs": side_input_names(cfg),
        "backbone_trainable_layers": sum(
            1 for layer in backbone_of(full).layers if layer.trainable and layer.weights
        ),
        "num_classes": dataset.num_classes,
        "class_names": dataset.class_names,
        "train_size": len(data.splits.train),
        "val_size": len(data.splits.val),
        "feature_cached": state.feature_cached,
        "feature_cache_s": round(data.feature_cache_s, 3),
        "run_dir": state.run_dir,
        **facts,
    }
    if is_chief():
        run_dir = Path(state.run_dir)
        write_json(run_dir / "summary.json", summary)
        title = f"{cfg.experiment} {state.phase}"
        plot_curves(run_dir / "figures" / "training_curves.png", rows, title)
    return summary
