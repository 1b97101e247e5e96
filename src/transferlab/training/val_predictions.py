"""After a phase: each validation image's prediction by the phase's model.

``val_predictions.csv`` in the phase's run directory lets the day checkpoint test
phase 1 against phase 2 image by image (the same validation images), instead of
reading a bare difference of two accuracies as a verdict.

The model is the phase's best; a phase 2 that never beat phase 1 has no best of its
own, so its last checkpoint speaks for it. With cached features the phase's
checkpoints hold the head alone, and it predicts from the validation features the
phase already computed, so this costs no backbone pass.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pandas as pd

from transferlab.runs import write_text

FILE = "val_predictions.csv"


def write_val_predictions(
    run_dir: Path, paths, state, val_batches, val_table: pd.DataFrame, class_names: list[str]
) -> Path | None:
    """Write ``run_dir/val_predictions.csv``; None when the phase left no model to ask.

    ``val_batches``: the phase's validation batches, in ``val_table``'s order (images, or
    the cached features its checkpoints take). Columns: sample_id, true_label,
    predicted_label, correct, then prob_<class> per class, as evaluate's predictions.csv.
    """
    checkpoint = state.best_file or state.last_file
    if not checkpoint or not (paths.folder / checkpoint).is_file():
        return None  # no epoch ran
    model = keras.models.load_model(paths.folder / checkpoint, safe_mode=True)
    probabilities = np.asarray(model.predict(val_batches, verbose=0), dtype=np.float64)
    if len(probabilities) != len(val_table):
        return None  # batches sharded across processes: not every image is here
    return write_text(
        run_dir / FILE, table(val_table, probabilities, class_names).to_csv(index=False)
    )


def table(val_table: pd.DataFrame, probabilities: np.ndarray, class_names: list[str]):
    labels = val_table["label"].to_numpy(dtype=int)
    predicted = probabilities.argmax(axis=1)
    rows = pd.DataFrame(
        {
            "sample_id": val_table["sample_id"].to_numpy(),
            "true_label": labels,
            "predicted_label": predicted,
            "correct": labels == predicted,
        }
    )
    probs = pd.DataFrame(probabilities, columns=[f"prob_{name}" for name in class_names])
    return pd.concat([rows, probs], axis=1)
