"""What a rule returns (a ``Finding``) and what it may know of a run besides its files."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}


@dataclass
class Finding:
    rule: str
    severity: str  # "critical", "warning" or "info"
    message: str
    action: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)
    # What it is about when a report gathers findings of several runs ("phase2").
    where: str = ""


@dataclass
class RunInfo:
    """What the history rules know of a training run besides metrics.csv; all optional.

    Built from the run's summary.json and config.json by ``RunInfo.of``, so an action can
    name the setting to change and its current value.
    """

    num_classes: int | None = None
    monitor: str | None = None
    phase: str | None = None
    # The phase's planned epochs, early-stopping patience and learning rate (config.json).
    epochs: int | None = None
    patience: int | None = None
    learning_rate: float | None = None
    unfreeze_from: str | None = None
    image_size: int | None = None
    stop_reason: str | None = None
    val_size: int | None = None
    # Phase 2 only: phase 1's best monitored value, and whether phase 1's model was kept.
    phase1_best: float | None = None
    kept_phase1: bool = False
    # Phase 2 only: the paired test of phase 2 against phase 1 on the same validation
    # images (experiments.paired.compare_predictions' result, or {"untested": why}).
    phase1_test: dict[str, Any] | None = None

    @classmethod
    def of(cls, summary: dict[str, Any], config: dict[str, Any] | None = None) -> RunInfo:
        config = config or {}
        phase = summary.get("phase")
        planned = config.get(phase, {}) if phase else {}
        return cls(
            num_classes=summary.get("num_classes"),
            monitor=summary.get("monitor"),
            phase=phase,
            epochs=planned.get("epochs"),
            patience=planned.get("patience"),
            learning_rate=planned.get("learning_rate"),
            unfreeze_from=planned.get("unfreeze_from"),
            image_size=config.get("model", {}).get("image_size") or summary.get("image_size"),
            stop_reason=summary.get("stop_reason"),
            val_size=summary.get("val_size"),
            phase1_best=finite(summary.get("phase1_best")),
            kept_phase1=bool(summary.get("kept_phase1")),
        )


def finite(value: Any) -> float | None:
    """``value`` as a float, or None when it is missing, not a number, NaN or infinite."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None
