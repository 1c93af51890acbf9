"""The evaluation figures, read through their matplotlib artists (labels, scale bars, stage marks)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.lines import Line2D

from cryomtd.evaluate.figures import (
    ConvergenceTrace,
    plot_convergence,
    plot_fsc,
    plot_volume_panels,
    scale_bar_length,
)
from cryomtd.mtd1d.metrics import overlay_figure
from cryomtd.seeding import rng


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _bbox(artist, fig):
    return artist.get_window_extent(fig.canvas.get_renderer())


def _inside(inner, outer, tol=1.0):
    return (
        inner.x0 >= outer.x0 - tol
        and inner.x1 <= outer.x1 + tol
        and inner.y0 >= outer.y0 - tol
        and inner.y1 <= outer.y1 + tol
    )


def _fsc_figure():
    f = np.linspace(0, 0.25, 11)
    curves = {"lsq": np.clip(1.1 - 4 * f, -0.1, 1), "em": np.clip(1.0 - 2.5 * f, 0, 1)}
    return plot_fsc(curves, f, (0.5, 0.143), voxel_size=2.0, resolutions={"lsq": (6.2, False), "em": (4.0, True)})


def test_fsc_threshold_labels_inside_the_axes_and_clear_of_the_legend():
    fig = _fsc_figure()
    ax = fig.axes[0]
    fig.canvas.draw()
    labels = {t.get_gid(): t for t in ax.texts if (t.get_gid() or "").startswith("threshold-")}
    assert set(labels) == {"threshold-0.5", "threshold-0.143"}
    box = _bbox(ax, fig)
    legend = _bbox(ax.get_legend(), fig)
    for t in labels.values():
        b = _bbox(t, fig)
        assert _inside(b, box), (t.get_text(), b, box)
        assert not b.overlaps(legend)
    assert "criterion against the truth" in labels["threshold-0.5"].get_text()
    assert "half-map" in labels["threshold-0.143"].get_text()
    # each label sits on its line: its data y is the threshold
    assert [labels[k].get_position()[1] for k in ("threshold-0.5", "threshold-0.143")] == [0.5, 0.143]
    # the criterion line is drawn solid, the half-map line dashed
    styles = {
        round(line.get_ydata()[0], 3): line.get_linestyle()
        for line in ax.get_lines()
        if np.ptp(line.get_ydata()) == 0 and len(line.get_ydata()) == 2
    }
    assert styles == {0.5: "-", 0.143: "--"}


def test_fsc_legend_gives_the_resolution_at_the_criterion():
    fig = _fsc_figure()
    texts = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert texts == ["lsq: 6.2 Å at FSC 0.5", "em: above 0.5 to the last shell (4 Å)"]
    assert fig.axes[0].get_xlabel() == "spatial frequency (1/Å)"


@pytest.mark.parametrize("box,length", [(30.0, 5.0), (22.0, 5.0), (64 * 1.2, 20.0), (11, 2.0), (200, 50.0), (3.0, 0.5)])
def test_scale_bar_length_is_round_and_at_most_30_percent(box, length):
    assert scale_bar_length(box) == length


def _scale_bars(ax):
    return [a for a in ax.get_children() if a.get_gid() == "scale-bar"]


@pytest.mark.parametrize("kind", ["slices", "projections", "mip"])
def test_volume_panels_have_a_scale_bar_of_the_right_pixel_length_and_distinct_titles(kind):
    L, vs = 20, 1.5
    g = rng(1, "test-figures")
    vols = {
        "truth": g.standard_normal((L, L, L)),
        "lsq": g.standard_normal((L, L, L)),
        "em": g.standard_normal((L, L, L)),
    }
    fig = plot_volume_panels(vols, kind, voxel_size=vs)
    axes = [a for a in fig.axes if a.images]  # the colour bar has no image
    assert len(axes) == 9
    titles = [a.get_title() for a in axes]
    assert len(set(titles)) == 9
    assert [t.split(":")[0] for t in titles] == ["truth"] * 3 + ["lsq"] * 3 + ["em"] * 3
    cut = {"slices": "slice {} = 10", "projections": "sum along {}", "mip": "max along {}"}[kind]
    assert [t.split(": ")[1] for t in titles[:3]] == [cut.format(a) for a in "zyx"]
    # image axes: a cut along z shows y (up) against x (right)
    assert (axes[0].get_ylabel(), axes[0].get_xlabel()) == ("y", "x")
    assert (axes[2].get_ylabel(), axes[2].get_xlabel()) == ("z", "y")
    for i, a in enumerate(axes):
        bars = _scale_bars(a)
        if i % 3:
            assert bars == []
            continue
        (bar,) = bars
        rect = bar.size_bar.get_children()[0]
        # box 20 · 1.5 Å = 30 Å → a 5 Å bar = 5 / 1.5 pixels in data (pixel) units
        assert rect.get_width() == pytest.approx(5.0 / vs)
        assert bar.txt_label.get_text() == "5 Å"


def test_volume_panels_without_a_voxel_size_measure_in_voxels():
    fig = plot_volume_panels({"truth": np.ones((11, 11, 11))}, "slices")
    (bar,) = _scale_bars(fig.axes[0])
    assert bar.size_bar.get_children()[0].get_width() == pytest.approx(2.0)
    assert bar.txt_label.get_text() == "2 voxels"


def test_convergence_marks_recorded_stages_and_notes_the_em_subset():
    lsq = ConvergenceTrace(
        "least-squares cost",
        np.geomspace(1, 1e-4, 20),
        stage_ends=(6, 13, 20),
        stage_labels=("ℓ ≤ 1", "ℓ ≤ 2", "refine"),
    )
    em = ConvergenceTrace(
        "log-likelihood per patch",
        np.array([-3.0, -2.0, -2.1, -1.9]),
        note="stochastic EM: each value is evaluated over that iteration's random subset",
    )
    fig = plot_convergence({"lsq": lsq, "em": em})
    a_lsq, a_em = fig.axes
    assert a_lsq.get_yscale() == "log" and a_em.get_yscale() == "linear"
    # boundaries between iteration 6 and 7, 13 and 14 (the end of the trace is not a boundary)
    marks = [line.get_xdata()[0] for line in a_lsq.get_lines() if line.get_gid() == "stage-boundary"]
    assert marks == [6.5, 13.5]
    assert [t.get_text() for t in a_lsq.texts] == ["ℓ ≤ 1", "ℓ ≤ 2", "refine"]
    assert not [line for line in a_em.get_lines() if line.get_gid() == "stage-boundary"]
    (note,) = [t for t in a_em.texts if t.get_gid() == "trace-note"]
    assert "subset" in note.get_text()
    fig.canvas.draw()
    assert _bbox(note, fig).y1 < _bbox(a_em, fig).y0  # under the axes, not over the curve


def test_mtd1d_overlay_has_a_residual_panel_per_estimator():
    truth = np.sin(np.linspace(0, 3, 21))
    ests = {"least squares": truth + 0.01, "EM": truth - 0.02 * np.arange(21) / 20}
    fig = overlay_figure(truth, ests, title="t")
    top, res = fig.axes
    assert res.get_ylabel() == "estimate − truth"
    lines = {line.get_label(): line for line in res.get_lines() if not line.get_label().startswith("_")}
    assert set(lines) == set(ests)
    for name, est in ests.items():
        np.testing.assert_allclose(lines[name].get_ydata(), est - truth, atol=1e-15)
    assert any(isinstance(line, Line2D) and np.all(np.asarray(line.get_ydata()) == 0) for line in res.get_lines())
    assert [line.get_label() for line in top.get_lines()] == ["truth", "least squares", "EM"]


def test_the_rule_and_the_library_name_the_same_figures():
    from cryomtd.evaluate import figures, stage

    assert stage.FIGURES == figures.FIGURES and set(stage.FIGURE_LABELS) == set(figures.FIGURES)
