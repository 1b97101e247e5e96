"""Every benchmark at a tiny size (so none of them rots), and the FLOP count by hand."""

from __future__ import annotations

import json
import math

import keras
import pandas as pd
import pytest

from transferlab.benchmarks import count_flops, run_benchmarks

from .conftest import demo_config


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """``make bench``'s stage once, shrunk: small_resnet at 16 px, N=8, one epoch."""
    tmp = tmp_path_factory.mktemp("bench")
    cfg = demo_config(
        tmp,
        {
            "model.backbone": "small_resnet",
            "model.image_size": 16,
            "train.batch_size": 4,
            "bench.repeats": 1,
            "bench.batch_size": 4,
            "bench.frozen_images": 8,
            "bench.frozen_epochs": [1, 2],
            "bench.frozen_image_size": 16,
            # Phase 2 cached against end to end has its own tiny test (test_freeze_once.py).
            "bench.phase2_epochs": 0,
            "bench.pipeline_images": 4,
            "bench.file_size": 24,
            "bench.model_sizes": [],
            "bench.matmul_sizes": [32, 64],
            "bench.eval_images": 20,
            "bench.scan_files": 30,
            "bench.summary": str(tmp / "benchmarks.md"),
            "lr_find.steps": 10,
            "lr_find.seeds": 1,
            "bench.sweep_trials": 2,
            "bench.health_images": 40,
        },
    )
    run_benchmarks(cfg)
    out = tmp / "outputs" / "bench"
    names = [
        "frozen_phase",
        "hardware_limit",
        "pipeline_scaling",
        "pipeline_overhead",
        "evaluate_memory",
        "scan_speed",
        "lr_find_speed",
        "sweep_speed",
        "health_speed",
        "decode_speed",
    ]
    results = {name: json.loads((out / f"{name}.json").read_text()) for name in names}
    return {"results": results, "out": out, "summary": tmp / "benchmarks.md"}


def check_figure(row: dict) -> None:
    assert row["min"] <= row["median"] <= row["max"]
    assert row["min"] > 0 and math.isfinite(row["max"])


def test_count_flops_of_a_small_conv_model_matches_a_hand_count():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)  # 2*8*8 * 3*3*3*4 = 13824
    x = keras.layers.Conv2D(5, 3, strides=2)(x)  # 3x3 out: 2*3*3 * 3*3*4*5 = 3240
    inner = keras.Model(inputs, x)
    outer_in = keras.Input((8, 8, 3))
    y = keras.layers.GlobalAveragePooling2D()(inner(outer_in))
    y = keras.layers.Dense(2)(y)  # 2*5*2 = 20
    assert count_flops(keras.Model(outer_in, y)) == 13824 + 3240 + 20


def test_count_flops_of_resnet50_at_224():
    # The published figure is about 3.9 GMACs (7.7 GFLOP) without the classifier.
    backbone = keras.applications.ResNet50(
        weights=None, include_top=False, input_shape=(224,) * 2 + (3,)
    )
    assert 7.6e9 < count_flops(backbone) < 7.8e9


def test_frozen_phase_times_both_arms_and_their_ratio(bench):
    result = bench["results"]["frozen_phase"]
    rows = result["figures"]
    assert [(r["figure"], r["epochs"]) for r in rows] == [
        (name, epochs)
        for epochs in (1, 2)
        for name in ("phase1_cached", "phase1_end_to_end", "speedup")
    ]
    for cached, e2e, speedup in (rows[:3], rows[3:]):
        for row in (cached, e2e):
            check_figure(row)
            assert len(row["runs"]) == 1
        assert speedup["median"] == pytest.approx(e2e["median"] / cached["median"])
    # Both lengths come from one run per arm: the longer phase took longer.
    for arm in (0, 1):
        assert rows[arm]["median"] < rows[3 + arm]["median"]
    # Same seed, data and model: caching changes the speed, not the result.
    assert result["val_loss_gap"] < 1e-3
    assert all(r["feature_cache_s"] > 0 for r in result["results"] if r["cached"])


def test_hardware_limit_reports_fractions_of_the_measured_peak(bench):
    result = bench["results"]["hardware_limit"]
    rows = {(r["figure"], r.get("size")): r for r in result["figures"]}
    assert result["peak_flops"] == max(rows["matmul", n]["median"] for n in (32, 64))
    forward, train = rows["forward", 16], rows["train_step", 16]
    for row in (forward, train):
        check_figure(row)
        assert row["fraction_of_peak"] == pytest.approx(
            row["median"] * row["flops_per_image"] / result["peak_flops"]
        )
    assert train["flops_per_image"] == 3 * forward["flops_per_image"] > 0
    assert result["machine"]["logical_cores"] >= 1


def test_pipeline_scaling_runs_n_2n_4n_in_subprocesses(bench):
    result = bench["results"]["pipeline_scaling"]
    rows = [(r["figure"], r["images"]) for r in result["figures"]]
    assert rows == [
        (name, n) for n in (4, 8, 16) for name in ("ms_per_image", "cached_ms_per_image")
    ]
    for row in result["figures"]:
        check_figure(row)
        assert row["max_rss_mb"] > 50  # a whole Python process with TensorFlow
    assert result["time_growth"] > 0 and result["memory_growth"] > 0
    # The first epoch decodes every file; the second takes the kept pixels.
    assert result["decodes_first_epoch"] == 4 + 8 + 16
    assert result["decodes_later_epochs"] == 0 and result["decodes_goal_met"]
    assert "JPEGs decoded in second epochs: 0 (goal 0: met)" in bench["summary"].read_text()


def test_pipeline_overhead_names_the_bound(bench):
    result = bench["results"]["pipeline_overhead"]
    pipeline, forward, train = result["figures"]
    assert [pipeline["figure"], forward["figure"], train["figure"]] == [
        "pipeline",
        "forward",
        "train_step",
    ]
    for row in (pipeline, forward, train):
        check_figure(row)
    assert result["pipeline_share_of_train_step"] == pytest.approx(
        train["median"] / pipeline["median"]
    )
    assert result["bound_by"] == (
        "model" if train["median"] < pipeline["median"] else "input pipeline"
    )


def test_evaluate_memory_runs_n_and_4n_in_subprocesses(bench):
    result = bench["results"]["evaluate_memory"]
    small, large = result["figures"]
    assert (small["folder_images"], large["folder_images"]) == (20, 80)
    assert small["images"] == 16 and large["images"] == 64  # the 80% test split
    for row in (small, large):
        check_figure(row)
        assert 100 < row["max_rss_mb"] < 4000
    assert result["memory_growth"] == pytest.approx(large["max_rss_mb"] / small["max_rss_mb"])
    assert result["goal_met"] == (result["memory_growth"] <= 1.2)
    # A TTA copy's time per image against the plain pass's, at each size.
    assert [r["images"] for r in result["tta_speed"]] == [16, 64]
    for row in result["tta_speed"]:
        assert row["plain_ms_per_image"] > 0 and row["copy_ms_per_image"] > 0
        assert row["ratio"] == pytest.approx(row["copy_ms_per_image"] / row["plain_ms_per_image"])
        assert row["goal_met"] == (row["ratio"] <= 1.15)


def test_decode_speed_times_both_decoders_at_one_and_two_workers(bench):
    result = bench["results"]["decode_speed"]
    rows = {(r["figure"], r["reader"], r["workers"]): r for r in result["figures"]}
    for reader in ("reader", "graph"):
        one, two = rows["images_per_s", reader, 1], rows["images_per_s", reader, 2]
        check_figure(one)
        check_figure(two)
        scaling = rows["scaling", reader, "2 vs 1"]
        assert scaling["median"] == pytest.approx(two["median"] / one["median"])
    assert result["images"] == 4 and result["file_size"] == [1920, 1080]
    assert "## 10. JPEG decoding: 1920x1080 photos" in bench["summary"].read_text()


def test_scan_speed_times_first_and_second_scan(bench):
    result = bench["results"]["scan_speed"]
    first, second = result["figures"]
    assert result["files"] == result["usable"] == 30
    check_figure(first)
    check_figure(second)
    assert result["speedup"] == pytest.approx(first["median"] / second["median"])


def test_csv_files_and_summary_table(bench):
    for name, result in bench["results"].items():
        table = pd.read_csv(bench["out"] / f"{name}.csv")
        assert len(table) == len(result["figures"])
        assert {"figure", "unit", "median", "min", "max"} <= set(table.columns)
    summary = bench["summary"].read_text()
    total = sum(r["wall_s"] for r in bench["results"].values())
    assert all(r["wall_s"] > 0 for r in bench["results"].values())
    assert f"The benchmarks took {total / 60:.1f} min of wall time (pipeline_scaling " in summary
    for heading in ["## Machine", "## Method", "## 1. Frozen", "## 2. Hardware", "## 3. Input"]:
        assert heading in summary
    assert "## 4. Pipeline overhead" in summary
    assert "## 5. Evaluation: memory" in summary and "## 6. Folder scan" in summary
    # The GPU section comes from the measured results committed in docs/bench_gpu/.
    assert "## GPU" in summary and "| bfloat16 | 256 | train step |" in summary
    frozen = bench["results"]["frozen_phase"]["figures"][2]
    assert f"{frozen['median']:.3g} [" in summary


def test_lr_find_speed_times_the_phase1_finder_against_its_goal(bench):
    result = bench["results"]["lr_find_speed"]
    timed, first = result["figures"]
    check_figure(timed)
    assert timed["goal"] == 10.0 and timed["goal_met"] == (timed["median"] < 10.0)
    assert first["computes_features"] and first["median"] > 0
    assert len(set(result["suggestions"])) == 1  # same data and seeds, same suggestion
    assert "## 7. Learning-rate finder, phase 1" in bench["summary"].read_text()


def test_sweep_speed_times_a_sweep_against_one_end_to_end_phase1(bench):
    result = bench["results"]["sweep_speed"]
    sweep, phase1, ratio = result["figures"]
    check_figure(sweep)
    frozen = bench["results"]["frozen_phase"]["figures"]
    assert phase1["median"] == frozen[1]["median"]  # end to end, the shortest E
    assert ratio["median"] == pytest.approx(sweep["median"] / phase1["median"])
    assert ratio["goal_met"] == (ratio["median"] <= 1.5)
    run = result["results"][0]
    assert run["complete"] + run["pruned"] == 2 and 0 < run["features_s"] < run["s"]
    assert "## 8. Sweep on cached features" in bench["summary"].read_text()


def test_gpu_benchmark_results_render_in_the_summary(tmp_path):
    from transferlab.benchmarks.gpu import accelerator_speed
    from transferlab.benchmarks.report import gpu_section

    result = accelerator_speed(
        [2], ["float32", "bfloat16"], 16, 1, tmp_path, "small_resnet", matmul_sizes=(64,)
    )
    assert {r["precision"] for r in result["figures"]} == {"float32", "bfloat16"}
    assert all(r["median"] > 0 and r["fraction_of_peak"] > 0 for r in result["figures"])
    (tmp_path / "gpu").mkdir()
    (tmp_path / "gpu" / "run.json").write_text(json.dumps(result))
    text = gpu_section(tmp_path / "gpu")
    table = [
        line
        for line in text.splitlines()
        if line.startswith("| float32") or line.startswith("| bfloat16")
    ]
    assert len(table) == 4
    forward = next(
        r for r in result["figures"] if r["precision"] == "float32" and r["figure"] == "forward"
    )
    assert f"{forward['median']:,.0f}" in text
    assert keras.mixed_precision.dtype_policy().name == "float32"


def test_phase_seconds_reads_each_length_from_one_run():
    from transferlab.benchmarks.frozen import EpochClock, phase_seconds

    clock = EpochClock()
    clock.ends = [12.0, 13.0, 14.5]  # setup took 10 s from the start at 2.0
    # After its last epoch the run saved and summarized for 1.5 s: each length does that.
    assert phase_seconds(2.0, clock, 16.0, [1, 3]) == {1: 11.5, 3: 14.0}


def test_health_speed_times_near_duplicates_and_scores_label_errors(bench):
    result = bench["results"]["health_speed"]
    small, large = result["figures"]
    assert (small["images"], large["images"]) == (40, 160)
    check_figure(small)
    assert result["recall"] >= 0.95 and result["wrong_share"] <= 0.01
    assert result["label_errors"]["flipped"] == 20 and result["label_errors"]["recall"] > 0.5
    assert "## 9. Data health" in bench["summary"].read_text()


def test_backends_summary_compares_mean_best_accuracy_over_seeds():
    from transferlab.benchmarks.backends import best_accuracy, summarize, verdict

    rows = pd.DataFrame({"val_macro_f1": [0.5, 0.9, 0.7], "val_accuracy": [0.6, 0.85, 0.95]})
    # The best epoch by the monitor, not the highest accuracy.
    assert best_accuracy(rows, "val_macro_f1") == 0.85
    results = pd.DataFrame(
        {
            "seed": [1, 1, 2, 2, 1, 1, 2, 2],
            "phase": ["phase1"] * 4 + ["phase2"] * 4,
            "backend": ["tensorflow", "jax"] * 4,
            "best_val_accuracy": [0.90, 0.87, 0.92, 0.90, 0.90, 0.95, 0.92, 0.97],
        }
    )
    summary = summarize(results).set_index("phase")
    assert summary.loc["phase1", "difference"] == pytest.approx(-0.025)
    assert summary.loc["phase2", "difference"] == pytest.approx(0.05)
    assert summary.loc["phase1", "tensorflow_sd"] == pytest.approx(0.0141, abs=1e-4)
    text = verdict(summary.reset_index())
    assert "phase1: best val accuracy over 2 seed(s)" in text
    assert "-0.0250 (goal within 0.03: met)" in text
    assert "+0.0500 (goal within 0.03: NOT met)" in text
