"""Data-health benchmark: near-duplicate search time at N and 4N, label-error ranking quality.

Near-duplicates, speed: N synthetic textured pictures (64 px) in memory, 5% of them with
an altered copy planted (cropped up to 8%, resized 75-125%, JPEG quality 60-95); timed
from pixels to groups (descriptors, SimHash buckets, verification).
Near-duplicates, accuracy on real photos: windows that do not overlap, cut at random
from the three photos the installed packages carry (scikit-learn's china.jpg and
flower.jpg, matplotlib's grace_hopper.jpg) and saved at 64 and 96 px, a quarter of them
with an altered copy planted; several draws, pooled. Real photos hold what synthetic
textures lack: plain skies and dark backgrounds, and many windows of one texture.
Label errors: the digits demo data with 5% of labels flipped at random, ranked by
cleanlab from an internal cross-validation on the pixels (the demo's random-init
backbone features carry little).
"""

from __future__ import annotations

import io
import time

import cv2
import numpy as np
import pandas as pd
from PIL import Image

from transferlab.benchmarks.timing import figure
from transferlab.config import Config
from transferlab.data.health.duplicates import describe, near_duplicate_groups
from transferlab.data.health.labels import internal_oof, rank_label_issues

PLANTED = 0.05
GROWTH_GOAL = 5.0
# Real-photo windows: sides (px) they are saved at, draws pooled per side.
PHOTO_SIDES = (64, 96)
PHOTO_DRAWS = 4


def textured(rng: np.random.Generator, size: int = 64) -> np.ndarray:
    """Smooth noise at several scales and a few discs: a picture with structure."""
    image = np.zeros((size, size, 3), np.float32)
    for scale in (4, 8, 16):
        noise = rng.normal(size=(size // scale + 2, size // scale + 2, 3)).astype(np.float32)
        image += cv2.resize(noise, (size, size), interpolation=cv2.INTER_CUBIC) * scale
    for _ in range(3):
        centre = tuple(int(v) for v in rng.integers(0, size, 2))
        colour = tuple(float(v) for v in rng.normal(0, 30, 3))
        cv2.circle(image, centre, int(rng.integers(4, size // 3)), colour, -1)
    image = (image - image.min()) / (np.ptp(image) + 1e-6) * 255
    return image.astype(np.uint8)


def altered(rng: np.random.Generator, pixels: np.ndarray) -> np.ndarray:
    """A copy cropped up to 8%, resized 75-125% and saved as a JPEG of quality 60-95."""
    image = Image.fromarray(pixels)
    w, h = image.size
    cw, ch = int(w * rng.uniform(0, 0.08)), int(h * rng.uniform(0, 0.08))
    left, top = int(rng.integers(0, cw + 1)), int(rng.integers(0, ch + 1))
    image = image.crop((left, top, w - (cw - left), h - (ch - top)))
    scale = rng.uniform(0.75, 1.25)
    image = image.resize((int(image.width * scale), int(image.height * scale)))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=int(rng.integers(60, 96)))
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def planted_set(n: int, seed: int) -> tuple[list[np.ndarray], set[tuple[int, int]]]:
    """n pictures, the last 5% altered copies of the first ones; the planted index pairs."""
    rng = np.random.default_rng(seed)
    copies = int(n * PLANTED)
    pictures = [textured(rng) for _ in range(n - copies)]
    pictures += [altered(rng, pictures[k]) for k in range(copies)]
    return pictures, {(k, n - copies + k) for k in range(copies)}


def find_groups(pictures: list[np.ndarray], threshold: float) -> tuple[list[dict], np.ndarray]:
    """The near-duplicate groups among ``pictures`` (sample ids are their positions), and
    per picture why the search left it out ("" when searched)."""
    table = pd.DataFrame({"sample_id": [str(i) for i in range(len(pictures))], "split": "train"})
    table["class_name"] = "x"
    descriptors, reasons = zip(*[describe(p, min(p.shape[:2])) for p in pictures], strict=True)
    reasons = np.array(reasons, dtype=object)
    return near_duplicate_groups(table, np.stack(descriptors), threshold, reasons=reasons), reasons


def pair_scores(groups: list[dict], planted: set[tuple[int, int]]) -> dict:
    """Planted pairs found (recall) and reported pairs that were not planted."""
    found = set()
    for g in groups:
        ids = sorted(int(s["sample_id"]) for s in g["samples"])
        found |= {(a, b) for i, a in enumerate(ids) for b in ids[i + 1 :]}
    return {
        "planted": len(planted),
        "reported": len(found),
        "found": len(found & planted),
        "wrong": len(found - planted),
        "recall": len(found & planted) / max(len(planted), 1),
        "wrong_share": len(found - planted) / max(len(found), 1),
    }


def time_near_duplicates(n: int, cfg: Config) -> dict:
    pictures, planted = planted_set(n, cfg.seed)
    start = time.perf_counter()
    groups, _ = find_groups(pictures, cfg.health.duplicate_similarity)
    seconds = time.perf_counter() - start
    return {"images": n, "seconds": seconds, **pair_scores(groups, planted)}


def bundled_photos() -> list[np.ndarray]:
    """The real photos the installed packages carry (no download)."""
    from matplotlib import cbook
    from sklearn.datasets import load_sample_images

    with cbook.get_sample_data("grace_hopper.jpg") as file:
        hopper = np.asarray(Image.open(file).convert("RGB"))
    return [*load_sample_images().images, hopper]


def photo_windows(rng: np.random.Generator, photos: list[np.ndarray], side: int) -> list:
    """Windows 8-30% of a photo's short side that overlap no other, resized to ``side``."""
    taken = [np.zeros(p.shape[:2], bool) for p in photos]
    windows = []
    for _ in range(20_000):
        k = int(rng.integers(len(photos)))
        height, width = photos[k].shape[:2]
        size = int(rng.uniform(0.08, 0.3) * min(height, width))
        y, x = int(rng.integers(0, height - size + 1)), int(rng.integers(0, width - size + 1))
        if taken[k][y : y + size, x : x + size].any():
            continue
        taken[k][y : y + size, x : x + size] = True
        window = np.ascontiguousarray(photos[k][y : y + size, x : x + size])
        windows.append(cv2.resize(window, (side, side), interpolation=cv2.INTER_AREA))
    return windows


def photo_pairs(cfg: Config) -> dict:
    """Planted pairs found and wrong pairs reported among real-photo windows, pooled.

    ``recall`` counts every planted pair; ``searched_recall`` only those whose two
    pictures the search takes (neither too plain nor too small, as the audit says).
    """
    photos = bundled_photos()
    keys = ("planted", "reported", "found", "wrong", "images", "left_out", "searched", "hits")
    totals = dict.fromkeys(keys, 0)
    # The tiny benchmark of the tests draws once per side.
    draws = max(1, min(PHOTO_DRAWS, cfg.bench.health_images // 500))
    for side in PHOTO_SIDES:
        for draw in range(draws):
            rng = np.random.default_rng([cfg.seed, side, draw])
            pictures = photo_windows(rng, photos, side)
            copies = len(pictures) // 4
            planted = {(k, len(pictures) + k) for k in range(copies)}
            pictures += [altered(rng, pictures[k]) for k in range(copies)]
            groups, reasons = find_groups(pictures, cfg.health.duplicate_similarity)
            scores = pair_scores(groups, planted)
            searched = {(a, b) for a, b in planted if reasons[a] == reasons[b] == ""}
            found = pair_scores(groups, searched)["found"]
            for key in ("planted", "reported", "found", "wrong"):
                totals[key] += scores[key]
            totals["images"] += len(pictures)
            totals["left_out"] += int((reasons != "").sum())
            totals["searched"] += len(searched)
            totals["hits"] += found
    return {
        **totals,
        "sides": list(PHOTO_SIDES),
        "recall": totals["found"] / max(totals["planted"], 1),
        "searched_recall": totals["hits"] / max(totals["searched"], 1),
        "wrong_share": totals["wrong"] / max(totals["reported"], 1),
    }


def label_errors(cfg: Config) -> dict:
    from sklearn.datasets import load_digits

    digits = load_digits()
    # All 1,797 images at the default size; the tiny test's bench takes fewer.
    count = min(len(digits.target), 10 * cfg.bench.health_images)
    pixels, labels = digits.data[:count], digits.target[:count].copy()
    rng = np.random.default_rng(cfg.seed)
    flipped = rng.choice(len(labels), int(PLANTED * len(labels)), replace=False)
    labels[flipped] = (labels[flipped] + rng.integers(1, 10, len(flipped))) % 10
    table = pd.DataFrame({"sample_id": np.arange(len(labels)).astype(str), "split": "train"})
    table["label"] = labels
    probabilities = internal_oof(pixels, labels, cfg.seed)
    issues = rank_label_issues(table, probabilities, [str(c) for c in range(10)])
    listed = set(issues["sample_id"].astype(int))
    truth = set(flipped.tolist())
    top = set(issues["sample_id"].astype(int).head(len(truth)))
    return {
        "images": len(labels),
        "flipped": len(truth),
        "listed": len(listed),
        "precision": len(listed & truth) / max(len(listed), 1),
        "recall": len(listed & truth) / len(truth),
        "precision_at_flipped": len(top & truth) / len(truth),
    }


def health_speed(cfg: Config) -> dict:
    """Near-duplicate time at N and 4N (bench.health_images) and label-error quality."""
    n = cfg.bench.health_images
    runs = {
        size: [time_near_duplicates(size, cfg) for _ in range(cfg.bench.repeats)]
        for size in (n, 4 * n)
    }
    rows = []
    for size, results in runs.items():
        per_10k = [r["seconds"] * 10_000 / size for r in results]
        rows.append(figure(f"near_duplicates_{size}", "s per 10,000 images", per_10k, images=size))
    growth = np.median([r["seconds"] for r in runs[4 * n]]) / np.median(
        [r["seconds"] for r in runs[n]]
    )
    last = runs[4 * n][-1]
    return {
        "benchmark": "health_speed",
        "figures": rows,
        "growth_4n": float(growth),
        "growth_goal_met": bool(growth <= GROWTH_GOAL),
        "recall": last["recall"],
        "wrong_share": last["wrong_share"],
        "photos": photo_pairs(cfg),
        "label_errors": label_errors(cfg),
    }
