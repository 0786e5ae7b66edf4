"""Tests for sgd_phases.plotting: structure of the returned figures and atomic saving."""

import os

import numpy as np
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure

from sgd_phases import plotting

S, E = 3, 6
STEPS = np.array([0, 10, 30, 100, 300, 1000])


@pytest.fixture
def rng():
  return np.random.default_rng(0)


def _fills(ax):
  return [c for c in ax.collections if isinstance(c, PolyCollection)]


def test_plot_band_lines_and_band(rng):
  fig = Figure()
  ax = fig.subplots()
  line = plotting.plot_band(ax, STEPS, rng.random((S, E)), "I", per_seed=True)
  assert line.get_label() == "I"
  assert len(ax.lines) == 1 + S
  assert len(_fills(ax)) == 1
  assert ax.get_xscale() == "symlog"
  np.testing.assert_array_equal(line.get_xdata(), STEPS)  # step 0 kept at 0
  fig2 = Figure()
  ax2 = fig2.subplots()
  plotting.plot_band(ax2, STEPS, rng.random(E), "one seed", logx=False)  # no band for S = 1
  assert len(ax2.lines) == 1 and not _fills(ax2) and ax2.get_xscale() == "linear"
  with pytest.raises(ValueError, match=r"\bvalues\b"):
    plotting.plot_band(ax2, STEPS, rng.random((S, E + 1)), "bad")


def test_plot_linear_phase(rng):
  fig = plotting.plot_linear_phase(
      STEPS, rng.random((S, E)), rng.random((S, E)), rng.random((S, E)), rng.random((S, E)),
      rng.random(S), t0_steps=np.array([10, 30, -1]), title="MNIST")
  assert isinstance(fig, Figure)
  top, bottom = fig.axes
  assert len(top.lines) == 4  # I(F;Y), μ, I(L;Y), T_0
  assert len(bottom.lines) == 3  # acc(F), acc(L), T_0
  assert len(_fills(top)) == 2 and len(_fills(bottom)) == 1
  t0_line = top.lines[-1]
  np.testing.assert_allclose(t0_line.get_xdata(), [20.0, 20.0])  # −1 (never) is ignored
  assert top.get_title() == "MNIST"
  assert bottom.get_xlabel() == "SGD step"
  labels = [t.get_text() for t in top.get_legend().get_texts()]
  assert "I(F_t;Y)" in labels and "μ_Y(F_t;L)" in labels
  no_t0 = plotting.plot_linear_phase(STEPS, *(rng.random((S, E)) for _ in range(4)),
                                     rng.random(S))
  assert len(no_t0.axes[0].lines) == 3


def test_plot_ladder(rng):
  mus = {f"CNN{k}": rng.random((S, E)) for k in (1, 2, 3)}
  fig = plotting.plot_ladder(STEPS, rng.random((S, E)), mus,
                             plateau_steps={"CNN1": np.array([10, 30, 30]), "CNN2": 100.0})
  (ax,) = fig.axes
  assert len(ax.lines) == 1 + 3 + 2
  assert len(_fills(ax)) == 4
  means = {ln.get_label(): ln for ln in ax.lines if ln.get_label().startswith("μ")}
  assert sorted(means) == ["μ_Y(F_t;CNN1)", "μ_Y(F_t;CNN2)", "μ_Y(F_t;CNN3)"]
  assert len({tuple(ln.get_color()) for ln in means.values()}) == 3
  np.testing.assert_allclose(ax.lines[2].get_xdata(), [70 / 3, 70 / 3])  # CNN1 plateau mean


def test_plot_retention(rng):
  curves = {p: {"I(F_t;Y)": rng.random((S, E)), "μ_Y(F_t;L)": rng.random((S, E)),
                "μ_Y(F_t;F_T0)": rng.random((S, E))} for p in (0.0, 0.1, 0.2)}
  train = {p: rng.random((S, E)) for p in curves}
  fig = plotting.plot_retention(STEPS, curves, train)
  assert len(fig.axes) == 6
  assert all(len(ax.lines) == 3 for ax in fig.axes[:3])
  assert all(len(ax.lines) == 1 for ax in fig.axes[3:])
  with pytest.raises(ValueError, match=r"\btrain_acc_by_noise\b"):
    plotting.plot_retention(STEPS, curves, {0.0: train[0.0]})


def test_plot_mi_vs_accuracy():
  a = np.linspace(0.5, 1.0, 51)
  with np.errstate(divide="ignore", invalid="ignore"):
    h = -(a * np.log2(a) + (1 - a) * np.log2(1 - a))
  curve = 1.0 - np.nan_to_num(h)
  fig = plotting.plot_mi_vs_accuracy(a, curve, [0.7, 0.9], [0.12, 0.53])
  (ax,) = fig.axes
  assert len(ax.lines) == 1 and len(ax.collections) == 1
  assert len(plotting.plot_mi_vs_accuracy(a, curve).axes[0].collections) == 0


def test_plot_decision_boundaries(rng):
  g = np.linspace(-1.2, 1.2, 20)
  snaps = [rng.integers(0, 2, (20, 20)) for _ in range(5)]
  x = rng.uniform(-1, 1, (30, 2))
  y = rng.integers(0, 2, 30)
  flipped = np.zeros(30, bool)
  flipped[:3] = True
  fig = plotting.plot_decision_boundaries(g, g, snaps, [0, 10, 100, 1000, 5000], x, y, flipped,
                                          ncols=3)
  assert len(fig.axes) == 5  # the sixth grid cell is removed
  for ax, step in zip(fig.axes, [0, 10, 100, 1000, 5000]):
    assert ax.get_title() == f"step {step}"
    assert len(ax.lines) == 1  # unit circle
    assert len(ax.collections) == 3  # region mesh, points, flipped x's
  fig = plotting.plot_decision_boundaries(g, g, snaps[:2], [1, 2], x, y, np.zeros(30, bool),
                                          titles=["early", "late"])
  assert [ax.get_title() for ax in fig.axes] == ["early", "late"]
  assert all(len(ax.collections) == 2 for ax in fig.axes)
  with pytest.raises(ValueError, match=r"\bsnapshots\b"):
    plotting.plot_decision_boundaries(g, g[:-1], snaps, [0] * 5, x, y, flipped)


def test_plot_theorem1(rng):
  labels = ["p=0.1, w0 ok", "p=0.1, w0 bad"]
  fig = plotting.plot_theorem1(STEPS, {k: rng.random((S, E)) for k in labels},
                               {k: rng.random((S, E)) for k in labels})
  (ax,) = fig.axes
  assert len(ax.lines) == 4 and len(_fills(ax)) == 4
  assert [ln.get_linestyle() for ln in ax.lines] == ["-", "--", "-", "--"]
  with pytest.raises(ValueError, match=r"\bkeys\b"):
    plotting.plot_theorem1(STEPS, {"a": rng.random((S, E))}, {"b": rng.random((S, E))})


def test_plot_sweep():
  fig = plotting.plot_sweep([0.01, 0.1, 1.0], [0.9, 0.8, 0.7], [0.85, 0.7, np.nan],
                            [0.95, 0.9, np.nan], "learning rate", logx=True)
  (ax,) = fig.axes
  assert ax.get_xlabel() == "learning rate" and ax.get_xscale() == "log"
  fig = plotting.plot_sweep(["mlp", "cnn"], [0.9, 0.8], [0.8, 0.7], [1.0, 0.9], "model")
  assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["mlp", "cnn"]
  with pytest.raises(ValueError, match=r"\blengths\b"):
    plotting.plot_sweep([1, 2], [0.9], [0.8], [1.0], "x")


def test_save_figure_atomic(tmp_path, rng):
  fig = plotting.plot_linear_phase(STEPS, *(rng.random((S, E)) for _ in range(4)), rng.random(S))
  out = tmp_path / "sub" / "fig.png"
  assert plotting.save_figure(fig, out, dpi=50) == str(out)
  data = out.read_bytes()
  assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
  plotting.save_figure(fig, out, dpi=60)  # overwrite in place
  assert os.listdir(out.parent) == ["fig.png"]
  with pytest.raises(ValueError):
    plotting.save_figure(fig, tmp_path / "fig.notaformat")
  assert sorted(os.listdir(tmp_path)) == ["sub"]  # no temp file left behind on failure
