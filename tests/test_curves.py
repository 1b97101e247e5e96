"""Training curves: integer epochs, and phase 1 and 2 on one epoch axis with the boundary."""

from __future__ import annotations

from transferlab.training.curves import curves_figure, plot_curves


def rows(count: int, learning_rate: float) -> list[dict]:
    # No macro_f1 columns: histories from elsewhere lack some metrics.
    return [
        {
            "epoch": e,
            "loss": 1 / e,
            "accuracy": 0.5 + 0.05 * e,
            "val_loss": 1.1 / e,
            "val_accuracy": 0.45 + 0.05 * e,
            "learning_rate": learning_rate,
        }
        for e in range(1, count + 1)
    ]


def test_phases_on_one_epoch_axis():
    fig = curves_figure({"phase1": rows(5, 1e-3), "phase2": rows(3, 1e-4)}, "demo")
    loss = fig.axes[0]
    assert loss.get_xlim() == (0.5, 8.5)
    assert all(t == int(t) for t in loss.get_xticks() if 0.5 <= t <= 8.5)  # whole epochs
    boundary = [line for line in loss.lines if list(line.get_xdata()) == [5.5, 5.5]]
    assert len(boundary) == 1
    # Phase 2's epochs follow phase 1's, each phase its own line.
    assert [list(line.get_xdata()) for line in loss.lines[:4]] == [
        [1, 2, 3, 4, 5],
        [1, 2, 3, 4, 5],
        [6, 7, 8],
        [6, 7, 8],
    ]
    assert [t.get_text() for t in loss.texts] == ["phase1", "phase2"]
    assert fig.axes[3].get_yscale() == "log"  # the learning rate drops tenfold


def test_one_phase(tmp_path):
    path = plot_curves(tmp_path / "curves.png", rows(4, 1e-3), "phase1")
    assert path.stat().st_size > 10_000
    assert plot_curves(tmp_path / "none.png", [], "empty") is None
    fig = curves_figure({"": rows(4, 1e-3)}, "phase1")
    assert len(fig.axes[0].texts) == 0 and len(fig.axes[0].lines) == 2  # no boundary, no label
