"""docs/benchmarks.md from the benchmark results: method, machine, figures, date.

Every number comes from a result dict (the JSON files in outputs/bench/). GPU figures are
measured on a lent GPU machine by ``transferlab.benchmarks.gpu`` and read from the JSON
files committed in docs/bench_gpu/.
"""

from __future__ import annotations

import json
from pathlib import Path

from transferlab.benchmarks.timing import ratio_figure
from transferlab.runs import write_text

GPU_PLACEHOLDER = """## GPU

GPU figures: not yet measured. They are to be measured on a lent GPU machine with
`KERAS_BACKEND=jax` (ResNet50 at 224, float32 and bfloat16, batch sizes 64-256, against
that machine's measured bf16 matmul peak) and never estimated.
"""

METHOD = """## Method

- `make bench` runs its benchmarks in one process (the pipeline-scaling and evaluation
  sizes each in a fresh subprocess; those import TensorFlow side by side, then run one at
  a time). No downloads: random weights (`model.weights` is set
  to `none`; speed does not depend on weight values) and synthetic images. The config
  (`make bench`'s default is `configs/cifar10_resnet50.yaml`) gives the model and
  `bench.*` the sizes; its dataset is never loaded.
- TensorFlow runs with oneDNN's CPU kernels: `import transferlab` sets
  `TF_ENABLE_ONEDNN_OPTS=1` unless it is set (docs/troubleshooting.md). Without them, on
  this CPU, phase 2's conv5 gradients were several times slower in both arms.
- Every figure is the median of `bench.repeats` timed runs, with the min and max in
  brackets. Model steps get one untimed warm-up call first (tracing and compiling).
- **Frozen phase**: `train_phase(cfg, "phase1")`, the product's own phase 1 (checkpoints,
  metrics and logs included), on a folder of synthetic JPEGs, with
  `train.cache_features` true and false, same seed, data and model, every epoch run
  (`patience=0`). Both arms run back to back within each repeat. Each arm runs the
  largest E once per repeat; the time of an E-epoch phase 1 is that run's wall time up
  to the end of epoch E (its checkpoint written) plus the run's work after its last
  epoch (final model save, summary), which a shorter run does once too. Speedup = median
  end-to-end time / median cached time; its bounds are slowest/fastest and
  fastest/slowest.
- **Hardware limit**: peak = best median FLOP/s of square float32 matmuls (2n³ FLOP
  each). The model's FLOPs are counted from its own layers (`count_flops`: 2 FLOP per
  kernel weight per output position of every Conv/Dense layer; BatchNorm, activations
  and pooling left out); a training step is counted as 3x the forward FLOPs. The
  training step trains every backbone layer (BatchNorm frozen), as phase 2 with
  `unfreeze_from=all`. Fraction of peak = images/s x FLOP per image / peak.
- **Input pipeline**: `make_tf_dataset` (training order: shuffled, parallel decode and
  resize, prefetch) streams JPEGs from a temporary folder; the files were just written,
  so they come from the page cache, not the disk itself. Peak memory is the subprocess's
  peak resident memory (VmHWM; imports included).
  Each run streams two epochs from an empty decoded-image cache: the first epoch's time is
  the figure (every file decoded), the second's is shown beside it and its decodes are
  counted (`read_image` calls; goal 0).
- **Pipeline overhead**: the pipeline alone, warm, in the main process, against the model's
  forward and training steps alone at the same input size.
- **TTA copies**: in each evaluation subprocess, after `evaluate`, one plain pass over the
  test split and `eval.tta=2` copies are timed apart (the model traced first, untimed; both
  read the decoded images `evaluate` kept). Ratio = copy ms/image / plain ms/image.
- **JPEG decoding**: `bench.pipeline_images / 4` synthetic 1920x1080 JPEGs, decoded and
  resized to the input size by a tf.data map whose private thread pool has 1 or 2
  threads; images/s per worker = images/s / workers; scaling = 2-worker / 1-worker
  images/s (bounds as for the speedup). On a machine whose cores are busy with other work
  the scaling cannot show.
- **Learning-rate finder**: `find_learning_rate` (phase 1, `lr_find.steps` x
  `lr_find.seeds`) on the frozen benchmark's folder and model, timed from the call to its
  written run folder; the first call, which computes the backbone features, apart.
- **Sweep**: `run_sweep` (`make sweep`: `bench.sweep_trials` trials, each training the
  head for E epochs, E the shortest of `bench.frozen_epochs`, pruning on) on the frozen
  benchmark's images, model and seed, from an empty output folder, so each repeat
  computes the backbone features and creates its SQLite study; timed from the feature
  computation to the written run folder. Ratio = median sweep time / median end-to-end
  phase 1 of E epochs from the frozen-phase benchmark; bounds as for the speedup.
"""


def span(row: dict, scale: float = 1.0, digits: int = 3) -> str:
    """``median [min-max]``, scaled, to ``digits`` significant figures."""
    med, low, high = (row[k] * scale for k in ("median", "min", "max"))
    return f"{med:.{digits}g} [{low:.{digits}g}-{high:.{digits}g}]"


def machine_section(machine: dict) -> str:
    devices = ", ".join(machine["devices"]) or "none used"
    return "\n".join(
        [
            "## Machine",
            "",
            "| | |",
            "|---|---|",
            f"| CPU | {machine['cpu']} |",
            f"| logical cores | {machine['logical_cores']} |",
            f"| accelerators | {devices} |",
            f"| Keras | {machine['keras']} (backend {machine['keras_backend']}, "
            f"{machine['backend_version']}) |",
            f"| Python, NumPy | {machine['python']}, {machine['numpy']} |",
            f"| 1-minute load average at start | {machine['load_average_1min']:.2f} |",
            f"| date | {machine['date']} |",
            "",
        ]
    )


def frozen_section(result: dict) -> str:
    lines = [
        "## 1. Frozen phase: feature-cached against end to end",
        "",
        f"{result['backbone']}, {result['images']} images ({result['image_size']} px, "
        f"batch {result['batch_size']}), 80/20 train/val. Seconds of wall time per phase 1.",
        "",
        "| epochs | cached (s) | end to end (s) | speedup | goal | met |",
        "|---|---|---|---|---|---|",
    ]
    rows = result["figures"]
    for epochs in sorted({r["epochs"] for r in rows}):
        cached, e2e, ratio = (r for r in rows if r["epochs"] == epochs)
        goal = f">= {ratio['goal']:g}x" if ratio["goal"] else "-"
        met = {True: "yes", False: "**no**", None: "-"}[ratio["goal_met"]]
        lines.append(
            f"| {epochs} | {span(cached)} | {span(e2e)} | {span(ratio)}x | {goal} | {met} |"
        )
    lines += [
        "",
        f"Same results: at every E, the validation losses of the two arms differ by at most "
        f"{result['val_loss_gap']:.2g}.",
        *epoch_split_lines(result),
    ]
    return "\n".join(lines + [""])


def epoch_split_lines(result: dict) -> list[str]:
    """A cached epoch in parts, and its steps against a bare model.fit (section 1)."""
    rows = {r["figure"]: r for r in result.get("epoch_split", [])}
    if not rows:
        return []
    ratio = rows["steps_over_bare_fit"]
    met = "met" if ratio["goal_met"] else "**not met**"
    return [
        "",
        "One cached epoch in parts (median epoch after the first, seconds):",
        "",
        "| training steps | validation | epoch end (metrics row, checkpoint commit, logs) "
        "| bare `model.fit`, same head and features: steps |",
        "|---|---|---|---|",
        f"| {span(rows['phase1_cached_epoch_steps'])} | "
        f"{span(rows['phase1_cached_epoch_validation'])} | "
        f"{span(rows['phase1_cached_epoch_commit'])} | {span(rows['bare_fit_epoch_steps'])} |",
        "",
        f"Steps over the bare fit's: {span(ratio)}x (goal at most {ratio['goal']:g}x: {met}).",
    ]


def phase2_section(result: dict) -> str:
    cached, e2e, ratio = result["figures"]
    met = "met" if ratio["goal_met"] else "**not met**"
    lines = [
        "## 11. Phase 2 from conv5: frozen prefix cached against end to end",
        "",
        f'`train_phase(cfg, "phase2")` from conv5, no augmentation, {result["backbone"]} on '
        f"{result['images']} synthetic images ({result['image_size']} px, batch "
        f"{result['batch_size']}), {result['epochs']} epochs per arm; seconds per epoch "
        "(median epoch after the first).",
        "",
        f"| cached at {result['cut']} (s) | end to end (s) | speedup | FLOP limit | goal | met |",
        "|---|---|---|---|---|---|",
        f"| {span(cached)} | {span(e2e)} | {span(ratio)}x | {result['flop_limit']:.2f}x | "
        f">= {ratio['goal']:g}x | {met} |",
        "",
        f"The frozen prefix is {100 * result['prefix_share']:.0f}% of the forward FLOPs "
        f"({result['prefix_flops'] / 1e9:.3g} of {result['whole_flops'] / 1e9:.3g} GFLOP per "
        "image). FLOP limit = (prefix + 3 x suffix) / (3 x suffix): a training step counted "
        "as 3x forward, the prefix forward only. Computing the cache once took "
        f"{span(result['cache_s'])} s; the last epoch's validation losses of the two arms "
        f"differ by {result['val_loss_gap']:.2g}.",
        "",
        *phase2_split_lines(result),
    ]
    return "\n".join(lines)


# EpochClock's parts of an epoch, in the order they run.
PHASE_PARTS = ("steps", "validation", "commit")


def phase2_split_lines(result: dict) -> list[str]:
    """Each arm's epoch in parts, end to end over cached per part, and the steps set
    beside the FLOP limit (a model of the steps alone)."""
    if not result.get("epoch_split"):
        return []
    rows = {r["figure"]: r for r in result["epoch_split"]}
    parts = {
        arm: [rows[f"phase2_{arm}_epoch_{part}"] for part in PHASE_PARTS]
        for arm in ("cached", "end_to_end")
    }
    ratios = [
        ratio_figure("part", e2e, cached)
        for cached, e2e in zip(parts["cached"], parts["end_to_end"], strict=True)
    ]
    # End to end, a step is the prefix's forward pass plus the cached step.
    steps_cached, steps_e2e = parts["cached"][0]["median"], parts["end_to_end"][0]["median"]
    prefix_share = (steps_e2e - steps_cached) / steps_cached
    flop_share = result["flop_limit"] - 1
    per_flop = "slower" if prefix_share > flop_share else "faster"
    return [
        "One epoch in parts (median epoch after the first, seconds):",
        "",
        "| arm | training steps | validation | epoch end (metrics row, checkpoint commit, logs) |",
        "|---|---|---|---|",
        "| cached | " + " | ".join(span(r) for r in parts["cached"]) + " |",
        "| end to end | " + " | ".join(span(r) for r in parts["end_to_end"]) + " |",
        "| end to end / cached | " + " | ".join(f"{span(r)}x" for r in ratios) + " |",
        "",
        "The FLOP limit models the training steps alone. End to end, a step adds the frozen "
        f"prefix's forward pass: here {prefix_share:.2f}x the cached steps' time, where the "
        f"FLOP count predicts {flop_share:.2f}x, so per FLOP the prefix ran {per_flop} than "
        "the suffix's training step. End to end, validation also runs the prefix and the "
        "checkpoint also holds the frozen layers' weights; on the cache both skip them.",
        "",
    ]


def hardware_section(result: dict) -> str:
    peak = result["peak_flops"]
    matmuls = [r for r in result["figures"] if r["figure"] == "matmul"]
    steps = [r for r in result["figures"] if r["figure"] != "matmul"]
    lines = [
        "## 2. Hardware limit",
        "",
        f"Measured float32 matmul peak: **{peak / 1e9:.3g} GFLOP/s** (n = {result['peak_size']}).",
        "",
        "| matmul n | GFLOP/s |",
        "|---|---|",
        *[f"| {r['size']} | {span(r, 1e-9)} |" for r in matmuls],
        "",
        f"| {result['backbone']} | size | batch | images/s | GFLOP/image | GFLOP/s | % of peak |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in steps:
        lines.append(
            f"| {r['figure'].replace('_', ' ')} | {r['size']} | {r['batch_size']} | {span(r)} | "
            f"{r['flops_per_image'] / 1e9:.3g} | {r['achieved_flops'] / 1e9:.3g} | "
            f"{100 * r['fraction_of_peak']:.0f}% |"
        )
    verdict = "reached" if result["goal_met"] else "**not reached**"
    lines += ["", f"Goal, forward at least 60% of the measured matmul peak: {verdict}.", ""]
    return "\n".join(lines)


def pipeline_section(result: dict) -> str:
    first = [r for r in result["figures"] if r["figure"] == "ms_per_image"]
    cached = {r["images"]: r for r in result["figures"] if r["figure"] == "cached_ms_per_image"}
    later = result["decodes_later_epochs"]
    lines = [
        "## 3. Input pipeline: a folder streamed from disk",
        "",
        f"JPEGs of {result['file_size']} px decoded and resized to {result['input_size']} px, "
        "two epochs per run: the first decodes every file, the second takes the decoded "
        "pixels kept by the first.",
        "",
        "| images | first epoch, ms/image | second epoch, ms/image | peak resident memory (MB) |",
        "|---|---|---|---|",
        *[
            f"| {r['images']} | {span(r)} | {span(cached[r['images']])} | {r['max_rss_mb']:.0f} |"
            for r in first
        ],
        "",
        f"From N to 4N, first-epoch time per image changed by x{result['time_growth']:.2f} and "
        f"peak memory (the kept pixels included) by x{result['memory_growth']:.3f}. JPEGs "
        f"decoded in second epochs: {later} (goal 0: {'met' if later == 0 else '**not met**'}).",
        "",
    ]
    return "\n".join(lines)


def overhead_section(result: dict) -> str:
    names = {"pipeline": "input pipeline alone", "forward": "model forward alone"}
    names["train_step"] = "model training step alone"
    lines = [
        "## 4. Pipeline overhead",
        "",
        f"At {result['input_size']} px:",
        "",
        "| | images/s |",
        "|---|---|",
        *[f"| {names[r['figure']]} | {span(r)} |" for r in result["figures"]],
        "",
        f"Training is bound by the **{result['bound_by']}**: the pipeline needs "
        f"{100 * result['pipeline_share_of_train_step']:.1f}% of a training step's time "
        "(on a CPU it shares the cores with the model).",
        "",
    ]
    return "\n".join(lines)


def evaluate_section(result: dict) -> str:
    lines = [
        "## 5. Evaluation: memory against split size",
        "",
        f"`evaluate` with TTA ({result['tta_passes']} pass) on folders of JPEGs split 10/10/80, "
        f"{result['backbone']} at {result['input_size']} px, each size in a fresh process.",
        "",
        "| folder images | images evaluated | ms/image | peak resident memory (MB) |",
        "|---|---|---|---|",
        *[
            f"| {r['folder_images']} | {r['images']} | {r['median']:.3g} | {r['max_rss_mb']:.0f} |"
            for r in result["figures"]
        ],
        "",
        f"From N to 4N, peak memory changed by x{result['memory_growth']:.3f} "
        f"(goal at most x{result['goal']:g}: {'met' if result['goal_met'] else '**not met**'}).",
        "",
        *tta_lines(result.get("tta_speed", [])),
    ]
    return "\n".join(lines)


def tta_lines(rows: list[dict]) -> list[str]:
    """TTA copies against the plain pass, same split, same process (after ``evaluate``)."""
    if not rows:
        return []
    return [
        "TTA copies (drawn in the input pipeline) against the plain pass, same split, same "
        "process, both reading the decoded images `evaluate` kept:",
        "",
        "| images | plain, ms/image | TTA copy, ms/image | ratio | goal at most |",
        "|---|---|---|---|---|",
        *[
            f"| {r['images']} | {r['plain_ms_per_image']:.3g} | {r['copy_ms_per_image']:.3g} "
            f"| x{r['ratio']:.2f} ({'met' if r['goal_met'] else '**not met**'}) | x{r['goal']:g} |"
            for r in rows
        ],
        "",
    ]


def decode_section(result: dict) -> str:
    rows = [r for r in result["figures"] if r["figure"] == "images_per_s"]
    scaling = {r["reader"]: r for r in result["figures"] if r["figure"] == "scaling"}
    names = {
        "reader": "reader (Pillow draft + OpenCV, tf.numpy_function)",
        "graph": "graph (tf.io.decode_jpeg at the draft scale, export's resize)",
    }
    lines = [
        "## 10. JPEG decoding: 1920x1080 photos",
        "",
        f"{result['images']} JPEGs of 1920x1080 decoded and resized to {result['input_size']} "
        "px by a tf.data map with 1 and 2 workers (its own thread pool of that size).",
        "",
        "| decoder | workers | images/s | images/s per worker |",
        "|---|---|---|---|",
        *[
            f"| {names[r['reader']]} | {r['workers']} | {span(r)} "
            f"| {r['median'] / r['workers']:.3g} |"
            for r in rows
        ],
        "",
        "Scaling from 1 to 2 workers: "
        + ", ".join(f"{name} x{row['median']:.2f}" for name, row in scaling.items())
        + ".",
        "",
    ]
    return "\n".join(lines)


def scan_section(result: dict) -> str:
    first, second = result["figures"]
    lines = [
        "## 6. Folder scan: once, then only new or changed files",
        "",
        f"A folder of {result['files']:,} JPEGs (written just before, so read from the page "
        "cache), loaded twice with `load_dataset`.",
        "",
        "| scan | seconds |",
        "|---|---|",
        f"| first (decodes every file) | {first['median']:.3g} |",
        f"| second (reads scan.csv, stats the files) | {second['median']:.3g} |",
        "",
        f"The second scan is {result['speedup']:.1f}x faster (goal at least "
        f"{result['goal']:g}x: {'met' if result['goal_met'] else '**not met**'}).",
        "",
    ]
    return "\n".join(lines)


def lr_find_section(result: dict) -> str:
    timed, first = result["figures"]
    met = "met" if timed["goal_met"] else "**not met**"
    lines = [
        "## 7. Learning-rate finder, phase 1",
        "",
        f"`make lr-find` (phase 1: {result['steps']} steps x {result['seeds']} seeds on the "
        f"cached features) for {result['backbone']} on {result['images']} synthetic images "
        f"({result['image_size']} px, batch {result['batch_size']}), from the config to the "
        "written run folder (plot, CSV, summary).",
        "",
        "| | seconds |",
        "|---|---|",
        f"| features already cached (an earlier lr-find, sweep or cv) | {span(timed)} |",
        f"| first run, computing the backbone features | {first['median']:.3g} |",
        "",
        f"Goal, under {timed['goal']:g} s with the features cached: {met}. Suggested "
        f"learning rate(s): {', '.join(sorted({f'{s:.2e}' for s in result['suggestions']}))}.",
        "",
    ]
    return "\n".join(lines)


def sweep_section(result: dict) -> str:
    sweep, phase1, ratio = result["figures"]
    met = "met" if ratio["goal_met"] else "**not met**"
    runs = result["results"]
    features = sorted(r["features_s"] for r in runs)[len(runs) // 2]
    pruned = ", ".join(str(r["pruned"]) for r in runs)
    lines = [
        "## 8. Sweep on cached features",
        "",
        f"`make sweep`: {result['trials']} trials of {result['epochs']} epochs for "
        f"{result['backbone']} on {result['images']} synthetic images "
        f"({result['image_size']} px, batch {result['batch_size']}), one worker, features "
        "computed in each run.",
        "",
        "| | seconds |",
        "|---|---|",
        f"| whole sweep | {span(sweep)} |",
        f"| end-to-end phase 1, {result['epochs']} epochs (section 1) | {span(phase1)} |",
        "",
        f"The sweep takes {span(ratio)}x an end-to-end phase 1 (goal at most "
        f"{ratio['goal']:g}x: {met}); of it, computing the features took {features:.3g} s "
        f"(median). Trials pruned per run: {pruned}.",
        "",
    ]
    return "\n".join(lines)


def health_section(result: dict) -> str:
    small, large = result["figures"]
    labels = result["label_errors"]
    met = "met" if result["growth_goal_met"] else "**not met**"
    lines = [
        "## 9. Data health",
        "",
        "Near-duplicate search (`make data-health`) on synthetic textured 64 px pictures in "
        "memory, 5% of them altered copies (crop up to 8%, resize 75-125%, JPEG 60-95), "
        "from pixels to groups.",
        "",
        "| images | seconds per 10,000 images |",
        "|---|---|",
        f"| {small['images']} | {span(small)} |",
        f"| {large['images']} | {span(large)} |",
        "",
        f"From N to 4N the time grew x{result['growth_4n']:.2f} (goal at most x5: {met}). "
        f"At 4N, {100 * result['recall']:.1f}% of the planted pairs were found and "
        f"{100 * result['wrong_share']:.2f}% of the reported pairs were wrong.",
        "",
        *photo_lines(result.get("photos")),
        f"Label errors: digits ({labels['images']} images), {labels['flipped']} labels "
        f"flipped at random, ranked by cleanlab from a 5-fold logistic regression on the "
        f"pixels: {labels['listed']} listed, precision {labels['precision']:.2f}, recall "
        f"{labels['recall']:.2f}; precision of the top {labels['flipped']} "
        f"{labels['precision_at_flipped']:.2f}.",
        "",
    ]
    return "\n".join(lines)


def photo_lines(photos: dict | None) -> list[str]:
    """Planted pairs among windows of real photos (health_speed's "photos")."""
    if not photos:
        return []
    sides = " and ".join(str(side) for side in photos["sides"])
    return [
        f"On real photos ({photos['images']} windows of the bundled photos at {sides} px, "
        f"{photos['planted']} altered copies planted): {100 * photos['recall']:.1f}% of the "
        f"planted pairs found, {100 * photos['searched_recall']:.1f}% of those whose two "
        f"pictures the search takes ({photos['left_out']} pictures left out as too plain "
        f"or too small), and {100 * photos['wrong_share']:.2f}% of the "
        f"{photos['reported']} reported pairs wrong.",
        "",
    ]


SECTIONS = {
    "frozen_phase": frozen_section,
    "hardware_limit": hardware_section,
    "pipeline_scaling": pipeline_section,
    "pipeline_overhead": overhead_section,
    "evaluate_memory": evaluate_section,
    "scan_speed": scan_section,
    "lr_find_speed": lr_find_section,
    "sweep_speed": sweep_section,
    "health_speed": health_section,
    "decode_speed": decode_section,
    "phase2_cached": phase2_section,
}
ORDER = list(SECTIONS)


def section(result: dict, machine: dict) -> str:
    """One benchmark's section, dated when it was measured apart from the others."""
    text = SECTIONS[result["benchmark"]](result)
    measured = result.get("machine", machine)
    if measured["date"] != machine["date"]:
        text += (
            f"\nRe-measured alone on {measured['date']} "
            f"(1-minute load average {measured['load_average_1min']:.2f}).\n"
        )
    return text


GPU_RESULTS = Path(__file__).resolve().parents[3] / "docs" / "bench_gpu"


def gpu_section(results_dir: Path = GPU_RESULTS) -> str:
    """The GPU section, from the JSON files ``benchmarks.gpu`` wrote, or the placeholder."""
    files = sorted(results_dir.glob("*.json")) if results_dir.is_dir() else []
    if not files:
        return GPU_PLACEHOLDER
    parts = ["## GPU\n"]
    for path in files:
        parts.append(gpu_table(json.loads(path.read_text()), path.name))
    return "\n".join(parts)


def gpu_table(result: dict, source: str) -> str:
    machine = result["machine"]
    peaks = result["peaks"]
    devices = ", ".join(machine.get("devices", [])) or "CPU"
    lines = [
        f"{devices}; Keras {machine['keras']} on the {machine['backend']} "
        f"backend (jax {machine.get('jax', '?')}), Python {machine['python']}. The product's "
        "ResNet50 (`build_model`, random weights) at 224 px, synthetic batches already on the "
        "device, measured by `KERAS_BACKEND=jax python -m transferlab.benchmarks.gpu` "
        f"(raw results: `docs/bench_gpu/{source}`).",
        "",
        "Measured matmul peaks: "
        + ", ".join(
            f"{name} {peak['peak_flops'] / 1e12:.0f} TFLOP/s (n = {peak['peak_size']})"
            for name, peak in peaks.items()
        )
        + ". JAX's default float32 matmul precision uses TF32 tensor cores on this GPU.",
        "",
        "| precision | batch | step | images/s | TFLOP/s | % of its peak |",
        "|---|---|---|---|---|---|",
    ]
    for row in result["figures"]:
        lines.append(
            f"| {row['precision']} | {row['batch_size']} | {row['figure'].replace('_', ' ')} | "
            f"{row['median']:,.0f} [{row['min']:,.0f}-{row['max']:,.0f}] | "
            f"{row['achieved_flops'] / 1e12:.0f} | "
            f"{100 * row['fraction_of_peak']:.0f}% |"
        )
    return "\n".join(lines) + "\n"


def wall_times(results: list[dict]) -> str:
    """How long the run took, in all and per benchmark (the defaults must fit 10 minutes)."""
    total = sum(r["wall_s"] for r in results)
    parts = ", ".join(f"{r['benchmark']} {r['wall_s']:.0f} s" for r in results)
    return f"The benchmarks took {total / 60:.1f} min of wall time ({parts}).\n"


def write_summary(results: list[dict], machine: dict, path: Path) -> Path:
    """Write the markdown summary of ``results`` (benchmark dicts) to ``path``."""
    by_name = {r["benchmark"]: r for r in results}
    parts = [
        "# Benchmarks\n",
        f"Measured by `make bench` on {machine['date']}; raw results (every run) in "
        "`outputs/bench/<benchmark>.json` and `.csv`. Figures are CPU figures from this "
        "one machine, median [min-max].\n",
        wall_times(results),
        machine_section(machine),
        METHOD,
        *[section(by_name[name], machine) for name in ORDER if name in by_name],
        gpu_section(),
    ]
    return write_text(path, "\n".join(parts))
