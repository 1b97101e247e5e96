"""Temperature scaling kept beside its model: ``<model file>.calibration.json``.

``make evaluate SET='eval.calibrate=true'`` fits one temperature on the validation
split and saves it here with the model file's hash. ``predict`` and ``make export``
divide the model's logits by it only while that hash still matches: a model retrained
or replaced under the same name gets its raw probabilities and a warning, never a
temperature fitted to another model.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from transferlab.runs import read_json, write_json
from transferlab.training.state import file_hash


def calibration_path(model_path: str | Path) -> Path:
    """``models/demo_phase1_best.keras`` -> ``models/demo_phase1_best.keras.calibration.json``."""
    model_path = Path(model_path)
    return model_path.with_name(model_path.name + ".calibration.json")


def save_calibration(model_path: str | Path, temperature: float, **details) -> Path:
    """Write the temperature with the model file's hash (atomically); returns its path."""
    record = {
        "temperature": float(temperature),
        "model_file": Path(model_path).name,
        "model_sha1": file_hash(Path(model_path)),
        **details,
    }
    return write_json(calibration_path(model_path), record)


def load_temperature(model_path: str | Path) -> float | None:
    """The saved temperature of this exact model file, else None (with a warning if stale)."""
    path = calibration_path(model_path)
    if not path.is_file():
        return None
    record = read_json(path)
    if record.get("model_sha1") != file_hash(Path(model_path)):
        warnings.warn(
            f"{path.name} was fitted to another version of {Path(model_path).name} (the model "
            "file has changed since), so its temperature is not applied and probabilities are "
            "uncalibrated. Re-fit it with make evaluate SET='eval.calibrate=true', or delete "
            f"{path} to silence this",
            stacklevel=2,
        )
        return None
    return float(record["temperature"])
