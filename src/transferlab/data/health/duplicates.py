"""Near-duplicate images: the same picture re-encoded, resized or cropped a little.

Each image gets a small perceptual descriptor: the lowest 6x6 DCT frequencies of each
YCrCb channel of a 32x32 thumbnail read through the one image reader (a pHash kept as
real numbers instead of one bit each). Each coefficient is scaled by its spread over
the dataset, so no single frequency decides. Re-encodes (JPEG 60-95), resizes
(75-125%) and crops up to 8% keep a cosine similarity above ~0.82 to the original;
unrelated pictures stay below ~0.5 (measured on textured synthetic images; the tests
plant such copies). A pHash's 64 bits alone overlap there (copies up to 24 bits
apart, strangers from 14), which is why the descriptor stays real-valued.

Pairs are found without comparing all pairs: random-hyperplane hashing (SimHash) puts
each image in one bucket per table, and only images sharing a bucket are compared.
A pair at similarity 0.8 shares a bucket of at least one of the 64 tables with
probability 0.985; two unrelated images with about 0.015. Where backbone features were
cached (outputs/features/), the same search on them adds pairs the features call
near-identical. Pairs are joined into groups (connected components).
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from scipy.fft import dctn
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from transferlab.data.core import DataError
from transferlab.data.dataset import ImageDataset
from transferlab.data.images import read_image, resize_pixels

# Side the images are read at before the 32x32 thumbnail (JPEGs decode at reduced scale).
READ_SIZE = 64
THUMB = 32
FREQUENCIES = 6
# SimHash tables and bits per table: see the module docstring for the probabilities.
TABLES = 64
BITS = 12


def image_descriptor(pixels: np.ndarray) -> np.ndarray:
    """The low-frequency DCT coefficients (DC left out) of each YCrCb channel, float32."""
    small = cv2.resize(np.ascontiguousarray(pixels), (THUMB, THUMB), interpolation=cv2.INTER_AREA)
    channels = cv2.cvtColor(small, cv2.COLOR_RGB2YCrCb).astype(np.float32)
    parts = []
    for c in range(3):
        block = dctn(channels[..., c], norm="ortho")[:FREQUENCIES, :FREQUENCIES]
        parts.append(block.ravel()[1:])
    return np.concatenate(parts).astype(np.float32)


def dataset_descriptors(dataset: ImageDataset, rows: np.ndarray | None = None) -> np.ndarray:
    """One descriptor per table row (or per ``rows``), read through the image reader."""
    rows = np.arange(len(dataset.table)) if rows is None else rows
    if dataset.in_memory:
        return np.stack(
            [image_descriptor(resize_pixels(dataset.images[r], READ_SIZE)) for r in rows]
        )
    paths = dataset.table["path"].to_numpy()[rows]
    # Pillow releases the GIL while it decodes: threads read in parallel.
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        return np.stack(list(pool.map(lambda p: image_descriptor(read_image(p, READ_SIZE)), paths)))


def normalized(descriptors: np.ndarray) -> np.ndarray:
    """Each coefficient scaled by its spread over the dataset, then each row to unit length."""
    x = descriptors - descriptors.mean(axis=0)
    spread = x.std(axis=0)
    # A channel that never varies (grey images' colour) must not be blown up from noise.
    x = x / (spread + 1e-3 * max(float(spread.max()), 1e-12))
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def similar_pairs(vectors: np.ndarray, threshold: float, seed: int = 0) -> pd.DataFrame:
    """Pairs (i, j, similarity) of unit ``vectors`` with cosine similarity >= ``threshold``.

    Only pairs that share a SimHash bucket in some table are compared, so the work grows
    with the images plus the (few) candidates, not with all pairs.
    """
    n = len(vectors)
    found: dict[tuple[int, int], float] = {}
    if n < 2:
        return pd.DataFrame(columns=["i", "j", "similarity"])
    planes = np.random.default_rng(seed).normal(size=(vectors.shape[1], TABLES * BITS))
    bits = (vectors @ planes.astype(vectors.dtype)) > 0
    weights = 1 << np.arange(BITS, dtype=np.int64)
    for table in range(TABLES):
        keys = bits[:, table * BITS : (table + 1) * BITS] @ weights
        for i, j in bucket_pairs(keys):
            keep = np.einsum("ij,ij->i", vectors[i], vectors[j]) >= threshold
            for a, b, s in zip(
                i[keep],
                j[keep],
                np.einsum("ij,ij->i", vectors[i[keep]], vectors[j[keep]]),
                strict=True,
            ):
                found[(int(a), int(b))] = float(s)
    rows = [(i, j, s) for (i, j), s in sorted(found.items())]
    return pd.DataFrame(rows, columns=["i", "j", "similarity"])


def bucket_pairs(keys: np.ndarray, chunk: int = 200_000):
    """Every pair (i < j) of positions with equal keys, as index arrays in chunks."""
    order = np.argsort(keys, kind="stable")
    ranked = keys[order]
    offset = 1
    while True:
        same = np.flatnonzero(ranked[offset:] == ranked[:-offset])
        if same.size == 0:
            return
        a, b = order[same], order[same + offset]
        for start in range(0, a.size, chunk):
            i, j = a[start : start + chunk], b[start : start + chunk]
            yield np.minimum(i, j), np.maximum(i, j)
        offset += 1


def group_pairs(n: int, pairs: pd.DataFrame) -> list[np.ndarray]:
    """Groups of two or more positions joined by ``pairs`` (connected components)."""
    if pairs.empty:
        return []
    i, j = pairs["i"].to_numpy(int), pairs["j"].to_numpy(int)
    graph = coo_matrix((np.ones(len(i)), (i, j)), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    sizes = np.bincount(component)
    return [np.flatnonzero(component == c) for c in np.flatnonzero(sizes > 1)]


def near_duplicate_groups(
    table: pd.DataFrame,
    descriptors: np.ndarray,
    threshold: float,
    features: np.ndarray | None = None,
    feature_threshold: float = 0.0,
) -> list[dict]:
    """Groups of near-duplicates among ``table``'s rows (sample_id, split, class_name[, path]).

    ``descriptors``: ``dataset_descriptors`` row-aligned with ``table``; ``features``:
    backbone features row-aligned too (or None). Each group lists its images, their
    splits, the lowest similarity joining it and whether it spans splits.
    """
    pairs = similar_pairs(normalized(descriptors), threshold).assign(by="pixels")
    if features is not None and feature_threshold > 0:
        centred = features - features.mean(axis=0)
        unit = centred / np.maximum(np.linalg.norm(centred, axis=1, keepdims=True), 1e-12)
        pairs = pd.concat([pairs, similar_pairs(unit, feature_threshold).assign(by="features")])
    groups = []
    for members in group_pairs(len(table), pairs):
        rows = table.iloc[members]
        inside = pairs[pairs["i"].isin(members)]
        splits = sorted(set(rows["split"]))
        groups.append(
            {
                "samples": [
                    {
                        "sample_id": str(r.sample_id),
                        "path": str(getattr(r, "path", "") or ""),
                        "split": r.split,
                        "label": r.class_name,
                    }
                    for r in rows.itertuples()
                ],
                "splits": splits,
                "cross_split": len(splits) > 1,
                "similarity": round(float(inside["similarity"].min()), 4),
                "found_by": sorted(set(inside["by"])),
            }
        )
    # Cross-split groups first (they inflate scores), then the largest.
    return sorted(groups, key=lambda g: (not g["cross_split"], -len(g["samples"])))


def near_duplicate_block(groups: list[dict], images: int, threshold: float) -> dict:
    """audit.json's "near_duplicates": the groups and how many span splits."""
    return {
        "images": images,
        "threshold": threshold,
        "groups": groups,
        "cross_split_groups": sum(g["cross_split"] for g in groups),
        "test_images_in_cross_split_groups": sorted(
            {
                s["sample_id"]
                for g in groups
                if g["cross_split"]
                for s in g["samples"]
                if s["split"] == "test"
            }
        ),
    }


def near_duplicate_ids(directory: Path) -> list[str]:
    """Sample ids in a near-duplicate group spanning splits, from the splits' audit.json.

    Raises ``DataError`` when the near-duplicate audit has not run (make data-health).
    """
    path = directory / "audit.json"
    audit = json.loads(path.read_text()) if path.is_file() else {}
    if "near_duplicates" not in audit:
        raise DataError(
            f"eval.exclude_near_duplicates=true needs the near-duplicate audit in {path}; "
            "run make data-health first (same CONFIG), or set eval.exclude_near_duplicates=false"
        )
    groups = audit["near_duplicates"]["groups"]
    return sorted({s["sample_id"] for g in groups if g["cross_split"] for s in g["samples"]})
