"""Near-duplicate images: the same picture re-encoded, resized or cropped a little.

Each image gets a small perceptual descriptor: the lowest 6x6 DCT frequencies of each
YCrCb channel of a 32x32 thumbnail read through the one image reader (a pHash kept as
real numbers instead of one bit each). Each coefficient is scaled by its spread over
the dataset, so no single frequency decides. Re-encodes (JPEG 60-95), resizes
(75-125%) and crops up to 8% of photos 64 px or larger keep a cosine similarity above
~0.8 to the original (benchmarks.health measures it on windows of real photos).

Two kinds of image are left out of that search, because there a copy is no closer to
its original than unrelated pictures are to each other:
- images under MIN_SIDE px on their short side (an 8x8 digit, a 32x32 CIFAR image):
  there a crop of a few pixels and a JPEG pass leave an altered copy at a similarity
  of ~0.5 to its original (5th percentile, 32 px windows of photos), while different
  8x8 digits of one class reach 0.95. MIN_SIDE still takes the copies of 64 px
  pictures shrunk to 75% and cropped 8% (44 px);
- plain images (grey-level spread under MIN_DETAIL of 255 on the thumbnail: sky, a
  dark background): their few details are JPEG noise, and two of them look alike.
The audit says how many it left out and why; byte-identical copies of them are still
found by the split audit's content hash, and similar features where features exist.

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
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from PIL import Image
from scipy.fft import dctn
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from transferlab.data.core import SPLIT_NAMES, DataError
from transferlab.data.dataset import ImageDataset
from transferlab.data.images import read_image, resize_pixels

# Side the images are read at before the 32x32 thumbnail (JPEGs decode at reduced scale).
READ_SIZE = 64
THUMB = 32
FREQUENCIES = 6
# Coefficients per descriptor: FREQUENCIES squared less DC, for each of 3 channels.
DESCRIPTOR_SIZE = 3 * (FREQUENCIES**2 - 1)
# SimHash tables and bits per table: see the module docstring for the probabilities.
TABLES = 64
BITS = 12
# Images smaller (short side, px) or plainer (grey-level standard deviation of the
# thumbnail, 0-255) than this are left out of the perceptual search: see the docstring.
MIN_SIDE = 40
MIN_DETAIL = 6.0


def image_descriptor(pixels: np.ndarray) -> np.ndarray:
    """The low-frequency DCT coefficients (DC left out) of each YCrCb channel, float32."""
    small = thumbnail(pixels)
    channels = cv2.cvtColor(small, cv2.COLOR_RGB2YCrCb).astype(np.float32)
    parts = []
    for c in range(3):
        block = dctn(channels[..., c], norm="ortho")[:FREQUENCIES, :FREQUENCIES]
        parts.append(block.ravel()[1:])
    return np.concatenate(parts).astype(np.float32)


def thumbnail(pixels: np.ndarray) -> np.ndarray:
    return cv2.resize(np.ascontiguousarray(pixels), (THUMB, THUMB), interpolation=cv2.INTER_AREA)


def image_detail(pixels: np.ndarray) -> float:
    """How much the thumbnail's grey levels vary (their standard deviation, 0-255)."""
    return float(cv2.cvtColor(thumbnail(pixels), cv2.COLOR_RGB2GRAY).std())


def describe(pixels: np.ndarray, short_side: int) -> tuple[np.ndarray, str]:
    """An image's descriptor (read at READ_SIZE) and why it is left out of the search:
    "small" (``short_side`` under MIN_SIDE: not even described), "plain", or ""."""
    if short_side < MIN_SIDE:
        return np.zeros(DESCRIPTOR_SIZE, np.float32), "small"
    small = resize_pixels(pixels, READ_SIZE)
    return image_descriptor(small), "plain" if image_detail(small) < MIN_DETAIL else ""


def describe_file(path: str) -> tuple[np.ndarray, str]:
    """``describe`` for an image file; a small one is judged from its header, not decoded."""
    with Image.open(path) as image:
        side = min(image.size)
    return describe(read_image(path, READ_SIZE) if side >= MIN_SIDE else None, side)


def dataset_descriptors(
    dataset: ImageDataset, rows: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """One descriptor per table row (or per ``rows``), read through the image reader, and
    per row why it is left out of the search ("small", "plain", or "" when searched)."""
    rows = np.arange(len(dataset.table)) if rows is None else rows
    if dataset.in_memory:
        described = [describe(dataset.images[r], min(dataset.images[r].shape[:2])) for r in rows]
    else:
        paths = dataset.table["path"].to_numpy()[rows]
        # Pillow releases the GIL while it decodes: threads read in parallel.
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            described = list(pool.map(describe_file, paths))
    if not described:
        return np.zeros((0, DESCRIPTOR_SIZE), np.float32), np.zeros(0, dtype=object)
    descriptors, reasons = zip(*described, strict=True)
    return np.stack(descriptors), np.array(reasons, dtype=object)


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
    columns = ["i", "j", "similarity"]
    if len(vectors) < 2:
        return pd.DataFrame(columns=columns)
    planes = np.random.default_rng(seed).normal(size=(vectors.shape[1], TABLES * BITS))
    bits = (vectors @ planes.astype(vectors.dtype)) > 0
    weights = 1 << np.arange(BITS, dtype=np.int64)
    found_i, found_j, found_s = [], [], []
    for table in range(TABLES):
        keys = bits[:, table * BITS : (table + 1) * BITS] @ weights
        for i, j in bucket_pairs(keys):
            similarity = np.einsum("ij,ij->i", vectors[i], vectors[j])
            keep = similarity >= threshold
            found_i.append(i[keep])
            found_j.append(j[keep])
            found_s.append(similarity[keep])
    if not found_i:
        return pd.DataFrame(columns=columns)
    i, j, similarity = (np.concatenate(x) for x in (found_i, found_j, found_s))
    # A pair found in several tables is kept once (np.unique also sorts by i, then j).
    _, first = np.unique(i.astype(np.int64) * len(vectors) + j, return_index=True)
    return pd.DataFrame(
        {"i": i[first], "j": j[first], "similarity": similarity[first].astype(float)}
    )


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
    # Positions sorted by component, cut where the component changes: linear in n.
    order = np.argsort(component, kind="stable")
    cuts = np.flatnonzero(np.diff(component[order])) + 1
    return [members for members in np.split(order, cuts) if len(members) > 1]


def near_duplicate_groups(
    table: pd.DataFrame,
    descriptors: np.ndarray,
    threshold: float,
    features: np.ndarray | None = None,
    feature_threshold: float = 0.0,
    reasons: np.ndarray | None = None,
) -> list[dict]:
    """Groups of near-duplicates among ``table``'s rows (sample_id, split, class_name[, path]).

    ``descriptors`` and ``reasons``: ``dataset_descriptors`` row-aligned with ``table``
    (rows with a reason are left out of the perceptual search; None searches every row);
    ``features``: backbone features row-aligned too (or None). Each group lists its
    images, their splits, the lowest similarity joining it and whether it spans splits.
    """
    searched = np.flatnonzero(reasons == "") if reasons is not None else np.arange(len(table))
    pairs = pd.DataFrame(columns=["i", "j", "similarity"])
    if len(searched) > 1:
        pairs = similar_pairs(normalized(descriptors[searched]), threshold)
    pairs = pairs.assign(by="pixels")
    # Back from positions among the searched rows to table rows.
    pairs["i"], pairs["j"] = searched[pairs["i"].to_numpy(int)], searched[pairs["j"].to_numpy(int)]
    if features is not None and feature_threshold > 0:
        centred = features - features.mean(axis=0)
        unit = centred / np.maximum(np.linalg.norm(centred, axis=1, keepdims=True), 1e-12)
        pairs = pd.concat([pairs, similar_pairs(unit, feature_threshold).assign(by="features")])
    groups = []
    columns = {c: table[c].to_numpy() for c in ("sample_id", "split", "class_name")}
    paths = table["path"].fillna("").to_numpy() if "path" in table else np.full(len(table), "")
    # Each pair's group, to find the lowest similarity and the searches inside a group.
    by_group = pairs.groupby(pairs["i"].to_numpy(int))
    first_of = {int(i): frame for i, frame in by_group}
    for members in group_pairs(len(table), pairs):
        inside = pd.concat([first_of[m] for m in members if m in first_of])
        splits = sorted(set(columns["split"][members]))
        groups.append(
            {
                "samples": [
                    {
                        "sample_id": str(columns["sample_id"][m]),
                        "path": str(paths[m] or ""),
                        "split": columns["split"][m],
                        "label": str(columns["class_name"][m]),
                    }
                    for m in members
                ],
                "splits": splits,
                "cross_split": len(splits) > 1,
                "similarity": round(float(inside["similarity"].min()), 4),
                "found_by": sorted(set(inside["by"])),
            }
        )
    # Cross-split groups first (they inflate scores), then the largest.
    return sorted(groups, key=lambda g: (not g["cross_split"], -len(g["samples"])))


def near_duplicate_block(
    groups: list[dict], images: int, threshold: float, reasons: np.ndarray | None = None
) -> dict:
    """audit.json's "near_duplicates": the groups, how many span splits, and how many
    images the perceptual search left out (too small, too plain) with the limits used."""
    reasons = np.zeros(0, dtype=object) if reasons is None else reasons
    return {
        "images": images,
        "threshold": threshold,
        "not_searched": {
            f"smaller_than_{MIN_SIDE}px": int((reasons == "small").sum()),
            "plain": int((reasons == "plain").sum()),
        },
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


def split_table(dataset: ImageDataset, splits) -> pd.DataFrame:
    """Train, val and test in that order (the features file's), with split, class and path."""
    table = pd.concat([splits[n].assign(split=n) for n in SPLIT_NAMES], ignore_index=True)
    table["sample_id"] = table["sample_id"].astype(str)
    if "path" in dataset.table:
        table["path"] = dataset.table["path"].to_numpy()[dataset.rows(table["sample_id"])]
    return table


def audit_near_duplicates(
    dataset: ImageDataset,
    table: pd.DataFrame,
    threshold: float,
    features: np.ndarray | None = None,
    feature_threshold: float = 0.0,
) -> dict:
    """audit.json's "near_duplicates" block for ``table`` (``split_table``'s rows)."""
    descriptors, reasons = dataset_descriptors(dataset, dataset.rows(table["sample_id"]))
    groups = near_duplicate_groups(
        table, descriptors, threshold, features, feature_threshold, reasons
    )
    return near_duplicate_block(groups, len(table), threshold, reasons)


def warn_about_near_duplicates(block: dict, directory: Path) -> None:
    """A terminal warning when near-duplicate groups span splits."""
    if block["cross_split_groups"]:
        warnings.warn(
            f"leakage: {block['cross_split_groups']} group(s) of near-duplicate images span "
            f"more than one split ({len(block['test_images_in_cross_split_groups'])} test "
            f"image(s)); see audit.json in {directory}. Test scores may be optimistic: drop "
            "the copies (data.corrections) or evaluate with eval.exclude_near_duplicates=true",
            stacklevel=3,
        )


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
