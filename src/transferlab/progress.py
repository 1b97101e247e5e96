"""What a long run shows while it works: a line per epoch, a bar over every long pass.

Both go to standard output, so they appear in a notebook's cell output and, when make
runs the notebook, in the terminal too. Bars redraw in place on a terminal and at
most every few seconds elsewhere (a notebook saved by papermill, a CI log).
"""

from __future__ import annotations

import math
import sys
import time

import keras
from tqdm import tqdm


def say(message: str) -> None:
    print(f"[transferlab] {message}", flush=True)


def progress_bar(total: int | None, description: str, unit: str = "img") -> tqdm:
    """A tqdm bar with a count and a rate; quiet redraws where the output is not a terminal."""
    interactive = sys.stdout.isatty()
    return tqdm(
        total=total,
        desc=f"[transferlab] {description}",
        unit=unit,
        file=sys.stdout,
        mininterval=0.5 if interactive else 10.0,
        leave=True,
        dynamic_ncols=interactive,
        ncols=None if interactive else 100,
    )


class PredictProgress(keras.callbacks.Callback):
    """A bar over a ``model.predict`` pass, counted in images."""

    def __init__(self, images: int, description: str):
        super().__init__()
        self.images, self.description = images, description
        self.bar = None

    def on_predict_begin(self, logs=None):
        self.bar = progress_bar(self.images, self.description)

    def on_predict_batch_end(self, batch, logs=None):
        outputs = keras.tree.flatten((logs or {}).get("outputs", []))
        done = len(outputs[0]) if outputs else 1
        self.bar.update(min(done, self.images - self.bar.n))

    def on_predict_end(self, logs=None):
        self.bar.close()


class EpochProgress(keras.callbacks.Callback):
    """One line per epoch with its metrics, its time and the time left.

    Per epoch, not per batch: a per-batch hook would switch off Keras's asynchronous
    batch handling (and on cached outputs a step is shorter than the hook's round trip).
    Replaces Keras's own progress output, whose per-batch redraws fill a saved notebook
    and a terminal log with thousands of lines.
    """

    def __init__(self, phase: str, epochs: int):
        super().__init__()
        self.phase, self.epochs = phase, epochs
        self.seconds: list[float] = []
        self.started = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self.started
        self.seconds.append(seconds)
        say(epoch_line(self.phase, epoch + 1, self.epochs, logs or {}, seconds, self.left(epoch)))

    def left(self, epoch: int) -> float:
        """Seconds the remaining epochs would take at the mean pace so far."""
        return (self.epochs - epoch - 1) * sum(self.seconds) / len(self.seconds)


def epoch_line(phase: str, epoch: int, epochs: int, logs: dict, seconds: float, left: float) -> str:
    """``phase1 epoch 3/30: loss 0.512 accuracy 0.812 ... (12.3 s; about 5 min left)``."""
    shown = ["loss", "accuracy", "val_loss", "val_accuracy", "val_macro_f1"]
    metrics = " ".join(f"{k} {float(logs[k]):.4f}" for k in shown if k in logs)
    # An estimate at the mean pace so far; early stopping may end the phase sooner.
    remaining = f"; about {duration(left)} left" if epoch < epochs else ""
    return f"{phase} epoch {epoch}/{epochs}: {metrics} ({seconds:.1f} s{remaining})"


def duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
