"""scikit-learn's bundled 8x8 digits: the offline demo dataset."""

from __future__ import annotations

import numpy as np
import pandas as pd

from transferlab.config import Config
from transferlab.data.dataset import ImageDataset


def load_digits(cfg: Config) -> ImageDataset:
    """The digits as 8x8 RGB uint8 images, in memory."""
    from sklearn.datasets import load_digits as sklearn_digits

    digits = sklearn_digits()
    grey = np.round(digits.images / 16.0 * 255.0).astype(np.uint8)
    images = np.repeat(grey[..., None], 3, axis=-1)
    table = pd.DataFrame(
        {
            "sample_id": [f"digits:{i}" for i in range(len(images))],
            "path": "",
            "label": digits.target.astype(np.int64),
            "group": "",
            "fixed_split": "",
        }
    )
    return ImageDataset("digits", [str(c) for c in digits.target_names], table, images)
