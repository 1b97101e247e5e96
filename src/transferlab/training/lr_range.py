"""The learning-rate range test (Smith 2015; fastai's ``lr_find``), and ``learning_rate=auto``.

The learning rate grows exponentially from ``min_lr`` to ``max_lr``, one step per
batch, while the model trains from its starting weights. The loss, smoothed as fastai
smooths it, first barely moves (the rate is too small), then falls, then blows up; the
test stops once it exceeds 4x the best seen. It is repeated over a few seeds (batch
order, dropout), each from the same starting weights, which are put back afterwards.

The suggestion is fastai's "valley" rule on the median curve across seeds: the middle of
the longest stretch over which the loss keeps falling (its longest decreasing
subsequence). It sits well below the blow-up and well above the flat start, where
training makes fast progress; unlike "steepest descent" it does not jump to a spike of
one noisy batch.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from transferlab.config import Config
from transferlab.runs import read_json, write_with
from transferlab.training.optim import logits_view, make_optimizer

SMOOTHING = 0.98  # fastai's: an exponential moving average over about 50 batches
DIVERGED = 4.0  # stop once the smoothed loss exceeds this many times the best


@dataclass
class RangeTest:
    """Smoothed loss against learning rate, per seed, and the suggested learning rate."""

    learning_rates: np.ndarray  # (steps,): the rate of each step, min_lr to max_lr
    curves: list[np.ndarray]  # per seed: smoothed loss per step, up to where it stopped
    seeds: list[int]
    rule: str = "valley"
    suggestion_index: int = field(init=False)

    def __post_init__(self) -> None:
        self.suggestion_index = valley(self.median)

    @property
    def length(self) -> int:
        """Steps every seed ran: the median and the band cover these."""
        return min(len(c) for c in self.curves)

    @property
    def lrs(self) -> np.ndarray:
        return self.learning_rates[: self.length]

    @property
    def median(self) -> np.ndarray:
        return np.median(self.stacked, axis=0)

    @property
    def band(self) -> tuple[np.ndarray, np.ndarray]:
        """Lowest and highest smoothed loss across seeds at each step."""
        return self.stacked.min(axis=0), self.stacked.max(axis=0)

    @property
    def stacked(self) -> np.ndarray:
        return np.stack([c[: self.length] for c in self.curves])

    @property
    def suggestion(self) -> float:
        return float(self.lrs[self.suggestion_index])

    def to_frame(self) -> pd.DataFrame:
        """One row per step: the rate, each seed's smoothed loss (blank after it stopped),
        the median and the band."""
        frame = pd.DataFrame({"step": np.arange(len(self.learning_rates))})
        frame["learning_rate"] = self.learning_rates
        for seed, curve in zip(self.seeds, self.curves, strict=True):
            padded = np.full(len(self.learning_rates), np.nan)
            padded[: len(curve)] = curve
            frame[f"loss_seed{seed}"] = padded
        low, high = self.band
        for name, values in (("median", self.median), ("min", low), ("max", high)):
            frame[name] = pd.Series(values)
        frame["suggested"] = frame["step"] == self.suggestion_index
        return frame


def valley(losses: np.ndarray) -> int:
    """fastai's "valley": the middle of the longest decreasing run of ``losses``.

    As fastai does, the first tenth and the last five steps are left out: the start is
    flat noise and the end is the blow-up. O(n^2), for the ~100 steps of a range test.
    """
    n = len(losses)
    first, last = (n // 10, n - 5) if n >= 20 else (0, n)
    part = losses[first:last]
    longest = np.ones(len(part), dtype=int)  # longest decreasing run ending at i
    end = 0
    for i in range(1, len(part)):
        for j in range(i):
            if part[i] < part[j] and longest[i] < longest[j] + 1:
                longest[i] = longest[j] + 1
        if longest[i] > longest[end]:
            end = i
    start = end - longest[end] + 1
    return first + start + (end - start) // 2


class RangeTestCallback(keras.callbacks.Callback):
    """Sets each batch's learning rate and records its smoothed loss; stops on blow-up."""

    def __init__(self, learning_rates: np.ndarray):
        super().__init__()
        self.learning_rates = learning_rates
        self.losses: list[float] = []
        self.average = 0.0
        self.best = np.inf

    def on_train_batch_begin(self, batch, logs=None):
        self.model.optimizer.learning_rate = float(self.learning_rates[len(self.losses)])
        # Keras reports the epoch's running mean; reset, it reports this batch's loss.
        self.model.reset_metrics()

    def on_train_batch_end(self, batch, logs=None):
        loss = float(logs["loss"])
        # fastai's smoothing: an exponential moving average, debiased for the first steps.
        self.average = SMOOTHING * self.average + (1 - SMOOTHING) * loss
        smoothed = self.average / (1 - SMOOTHING ** (len(self.losses) + 1))
        self.losses.append(smoothed)
        self.best = min(self.best, smoothed)
        done = len(self.losses) == len(self.learning_rates)
        if done or not np.isfinite(smoothed) or smoothed > DIVERGED * self.best:
            self.model.stop_training = True


def exponential_rates(min_lr: float, max_lr: float, steps: int) -> np.ndarray:
    """``steps`` rates from ``min_lr`` to ``max_lr``, each a constant factor above the last."""
    return np.geomspace(min_lr, max_lr, steps)


def range_test(
    model: keras.Model,
    batches: Callable[[int], object],
    learning_rates: np.ndarray,
    seeds: Sequence[int],
    class_weight: dict | None = None,
) -> RangeTest:
    """Run the range test on ``model`` (compiled, its optimizer not yet used) per seed.

    ``batches(seed)`` gives the training batches for one seed (a ``tf.data.Dataset`` of
    (inputs, one-hot labels), at least ``len(learning_rates)`` batches). Every seed starts
    from the model's weights and a fresh optimizer state; both are put back at the end.
    """
    weights = model.get_weights()
    optimizer = model.optimizer
    optimizer.build(model.trainable_variables)
    fresh = [v.numpy() for v in optimizer.variables]
    curves = []
    try:
        for seed in seeds:
            model.set_weights(weights)
            for variable, value in zip(optimizer.variables, fresh, strict=True):
                variable.assign(value)
            keras.utils.set_random_seed(seed)
            recorder = RangeTestCallback(learning_rates)
            model.fit(
                batches(seed),
                epochs=1,
                steps_per_epoch=len(learning_rates),
                callbacks=[recorder],
                class_weight=class_weight,
                shuffle=False,  # batches(seed) gives them in the seed's order
                verbose=0,
            )
            curves.append(np.array(recorder.losses))
    finally:
        model.set_weights(weights)
    finite = [c[np.isfinite(c)] for c in curves]
    if min(len(c) for c in finite) < 2:
        raise ValueError(
            f"the range test's loss was not finite from its first steps (at learning rate "
            f"{learning_rates[0]:.1e}): lower lr_find.min_lr, or check the data and labels"
        )
    return RangeTest(learning_rates, finite, list(seeds))


def reshuffled(train) -> Callable[[int], object]:
    """``batches(seed)`` for ``range_test`` from training's batches (a tf.data.Dataset):
    repeated, and their order shuffled per seed (a few batches at a time, so the images
    are never all held at once)."""
    return lambda seed: train.repeat().shuffle(8, seed=seed)


def find_phase_learning_rate(
    cfg: Config,
    phase: str,
    model: keras.Model,
    batches: Callable[[int], object],
    class_weight: dict | None = None,
) -> RangeTest:
    """``range_test`` with ``cfg.lr_find``'s settings and ``phase``'s optimizer and loss.

    A view of the model's logits is compiled for the test (it shares the weights, which
    the test puts back); the model itself is left as it was.
    """
    settings = cfg.lr_find
    # The phase's optimizer at a constant rate: the test sets the rate itself.
    test_phase = copy.deepcopy(cfg.phase(phase))
    test_phase.learning_rate = settings.min_lr
    test_phase.schedule = "constant"
    # The training loss alone: the test reads nothing else, and resetting the accuracy and
    # macro-F1 metrics every batch would cost more than the batch itself on cached features.
    # On the logits, as training computes it (see optim.compile_model).
    view = logits_view(model)
    view.compile(
        optimizer=make_optimizer(test_phase, cfg.train.clip_norm, 1),
        loss=keras.losses.CategoricalCrossentropy(
            from_logits=True, label_smoothing=cfg.train.label_smoothing
        ),
        jit_compile=cfg.train.xla,
    )
    rates = exponential_rates(settings.min_lr, settings.max_lr, settings.steps)
    seeds = [cfg.seed + i for i in range(settings.seeds)]
    return range_test(view, batches, rates, seeds, class_weight)


def plot_range_test(test: RangeTest, path: Path, title: str) -> Path:
    """Loss against learning rate (log x): the median across seeds, the min-max band, and
    the suggestion marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    low, high = test.band
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.fill_between(test.lrs, low, high, alpha=0.25, color="tab:blue", label="min-max across seeds")
    ax.plot(test.lrs, test.median, color="tab:blue", label=f"median of {len(test.seeds)} seeds")
    best = test.median[test.suggestion_index]
    ax.plot([test.suggestion], [best], "o", color="tab:red", zorder=3)
    ax.axvline(test.suggestion, color="tab:red", linestyle="--", linewidth=1)
    ax.annotate(
        f"suggested {test.suggestion:.1e}",
        (test.suggestion, best),
        textcoords="offset points",
        xytext=(8, 10),
        color="tab:red",
    )
    ax.set_xscale("log")
    # The blow-up at the end would flatten the useful part: show up to the highest loss
    # before the median's lowest point, with a margin.
    bottom = float(np.min(low))
    before_blow_up = float(np.max(high[: int(np.argmin(test.median)) + 1]))
    margin = 0.15 * max(before_blow_up - bottom, 1e-3)
    ax.set_ylim(bottom - margin, before_blow_up + margin)
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("training loss (smoothed)")
    ax.set_title(title)
    ax.legend(loc="lower left")
    fig.tight_layout()
    write_with(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)
    return path


def write_range_test(test: RangeTest, figure: Path, table: Path, title: str) -> None:
    """The plot (``figure``) and the curves (``table``, CSV) of a range test."""
    plot_range_test(test, figure, title)
    write_with(table, lambda tmp: test.to_frame().to_csv(tmp, index=False))


def resolve_learning_rate(
    cfg: Config,
    phase: str,
    run_dir: Path,
    model_for_test: Callable[[], keras.Model],
    train,
    class_weight: dict | None = None,
    write: bool = True,
) -> tuple[Config, dict]:
    """``phaseN.learning_rate=auto`` made a number, once per run, before training reads it.

    A resumed run reuses the number its config.json recorded; a new one runs the range
    test on ``model_for_test()`` (its weights are restored) with ``train``, the phase's
    training batches (a tf.data.Dataset of images or cached features), and records the
    suggestion in config.json, lr_find.csv and figures/lr_find.png. Returns the config
    with the number (a copy; ``cfg`` is unchanged, so the phase's resume fingerprint still
    says "auto") and the summary's facts: ``learning_rate`` and ``learning_rate_source``.
    """
    value = cfg.phase(phase).learning_rate
    if value != "auto":
        return cfg, {"learning_rate": value, "learning_rate_source": "config"}
    resolved = copy.deepcopy(cfg)
    recorded = recorded_learning_rate(run_dir / "config.json", phase)
    if recorded is not None:
        print(f"[transferlab] {phase}.learning_rate=auto: reusing this run's {recorded:.2e}")
        resolved.phase(phase).learning_rate = recorded
        return resolved, {"learning_rate": recorded, "learning_rate_source": "lr_find"}
    batches = reshuffled(train)
    test = find_phase_learning_rate(cfg, phase, model_for_test(), batches, class_weight)
    keras.utils.set_random_seed(cfg.seed)  # training draws as it would without the test
    resolved.phase(phase).learning_rate = test.suggestion
    print(f"[transferlab] {phase}.learning_rate=auto: range test suggests {test.suggestion:.2e}")
    if write:
        title = f"{cfg.experiment} {phase}: learning-rate range test"
        write_range_test(test, run_dir / "figures" / "lr_find.png", run_dir / "lr_find.csv", title)
        resolved.save(run_dir / "config.json")
    return resolved, {"learning_rate": test.suggestion, "learning_rate_source": "lr_find"}


def recorded_learning_rate(config_json: Path, phase: str) -> float | None:
    """The number a run's config.json holds for ``phase``'s learning rate, if any."""
    if not config_json.is_file():
        return None
    value = read_json(config_json).get(phase, {}).get("learning_rate")
    return float(value) if isinstance(value, int | float) else None
