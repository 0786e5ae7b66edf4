"""Figures of the paper from plain numpy arrays (matplotlib only, no pyplot state).

Every ``plot_*`` function (except :func:`plot_band` and :func:`plot_null_band`, which draw into
a given axes) builds a fresh ``matplotlib.figure.Figure`` and returns it; nothing is shown and
no global backend is set, so this module is safe under ``Agg``, in tests and in notebooks. Save
with :func:`save_figure` (atomic, local path or URI: ``io_lib.write_bytes``).

This module holds the figures of the paper's experiments (images and synthetic data) and is the
one to import: it re-exports the shared drawing pieces (:mod:`sgd_phases.plot_lib`: bands, step
axis, ``save_figure``) and the soft-measure and sequence-position figures
(:mod:`sgd_phases.soft_plots`: ``plot_soft``, ``plot_mixture``, ``plot_by_position``).

Usage::

    from sgd_phases import plotting, results

    res = results.load(workdir)
    m, a = res.measures("linear"), res.arrays
    fig = plotting.plot_linear_phase(a["steps"], m["i_fy"], m["mu"], m["i_ly"], m["acc_f"],
                                     res.reference("linear", "test_acc"), t0_steps=a["t0_step"],
                                     mu_null=res.null("linear"))
    plotting.save_figure(fig, f"{workdir}/linear_phase.png")
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.colors as mcolors
import numpy as np
from matplotlib.figure import Figure
from numpy.typing import ArrayLike

from sgd_phases.plot_lib import (  # noqa: F401 (re-exported: plotting.save_figure, ...)
    ACC_LIMITS, FONT, I_FY_NAME, STEP_LABEL, mean_positive, new_figure, plot_band, plot_null_band,
    save_figure, sequential_colors, style_axes)
from sgd_phases.soft_plots import (  # noqa: F401 (re-exported)
    SOFT_LABELS, plot_by_position, plot_mixture, plot_soft)


def plot_linear_phase(steps: ArrayLike, i_fy: ArrayLike, mu: ArrayLike, i_ly: ArrayLike,
                      acc_f: ArrayLike, acc_l: ArrayLike, t0_steps: ArrayLike | None = None,
                      title: str = "", logx: bool = True,
                      mu_null: ArrayLike | None = None) -> Figure:
  """Fig. 4 panel: (top) I(F_t;Y), μ_Y(F_t;L), line at mean I(L;Y); (bottom) accuracies.

  ``i_fy``, ``mu``, ``acc_f``: [S, E]; ``i_ly``: [S, E] or [S]; ``acc_l``: [S];
  ``t0_steps``: [S] in steps (negative = never, ignored), drawn at their mean; ``mu_null``:
  optional [P, S, E] null draws of μ, drawn as a hatched band (:func:`plot_null_band`).
  """
  st = np.asarray(steps, dtype=np.float64).ravel()
  fig, axes = new_figure(2, 1, sharex=True)
  top, bottom = axes[0, 0], axes[1, 0]
  plot_band(top, st, i_fy, I_FY_NAME, color="black", logx=logx)
  plot_band(top, st, mu, "μ_Y(F_t;L)", color="tab:blue", logx=logx)
  if mu_null is not None:
    plot_null_band(top, st, mu_null, color="tab:blue", logx=logx)
  top.axhline(float(np.nanmean(i_ly)), color="tab:blue", linestyle=":", linewidth=1,
              label="I(L;Y)")
  plot_band(bottom, st, acc_f, "acc(F_t)", color="black", logx=logx, limits=ACC_LIMITS)
  bottom.axhline(float(np.nanmean(acc_l)), color="tab:blue", linestyle=":", linewidth=1,
                 label="acc(L)")
  t0 = mean_positive(t0_steps)
  if t0 is not None:
    for ax in (top, bottom):
      ax.axvline(t0, color="tab:red", linestyle="--", linewidth=1,
                 label="T_0" if ax is top else None)
  style_axes(top, ylabel="information [bits]", title=title, legend=True)
  style_axes(bottom, xlabel=STEP_LABEL, ylabel="test accuracy", legend=True)
  return fig


def plot_ladder(steps: ArrayLike, i_fy: ArrayLike, mus: Mapping[str, ArrayLike],
                plateau_steps: Mapping[str, ArrayLike | float] | None = None,
                title: str = "", logx: bool = True, cmap: str = "viridis",
                nulls: Mapping[str, ArrayLike] | None = None) -> Figure:
  """Fig. 5: I(F_t;Y) and μ_Y(F_t;G_i) per reference (dict order = complexity order).

  ``plateau_steps[name]``: step(s) of the plateau (mean of non-negative entries is marked);
  ``nulls[name]``: optional [P, S, E] null draws, a hatched band in the rung's colour.
  """
  st = np.asarray(steps, dtype=np.float64).ravel()
  fig, axes = new_figure(panel=(5.0, 3.2))
  ax = axes[0, 0]
  plot_band(ax, st, i_fy, I_FY_NAME, color="black", logx=logx)
  colors = sequential_colors(len(mus), cmap)
  for color, (name, mu) in zip(colors, mus.items()):
    plot_band(ax, st, mu, f"μ_Y(F_t;{name})", color=color, logx=logx)
    if nulls and name in nulls:
      plot_null_band(ax, st, nulls[name], color=color, logx=logx,
                     label="null: F ⊥ G_i | Y (95%)" if name == next(iter(nulls)) else None)
    p = mean_positive(None if plateau_steps is None else plateau_steps.get(name))
    if p is not None:
      ax.axvline(p, color=color, linestyle=":", linewidth=1)
  style_axes(ax, xlabel=STEP_LABEL, ylabel="information [bits]", title=title, legend=True)
  return fig


def plot_retention(steps: ArrayLike, curves_by_noise: Mapping[float, Mapping[str, ArrayLike]],
                   train_acc_by_noise: Mapping[float, ArrayLike], logx: bool = True,
                   nulls: Mapping[float, ArrayLike] | None = None) -> Figure:
  """Retention with label noise: one column per noise rate p.

  Top row: the curves of ``curves_by_noise[p]`` (e.g. {"I(F_t;Y)": .., "μ_Y(F_t;L)": ..,
  "μ_Y(F_t;F_T0)": ..}, each [S, E]) and, from ``nulls[p]`` ([P, S, E]), the null band of
  μ_Y(F_t;L); bottom row: train accuracy on the noisy labels.
  """
  st = np.asarray(steps, dtype=np.float64).ravel()
  noises = list(curves_by_noise)
  if not noises:
    raise ValueError("curves_by_noise is empty")
  missing = [p for p in noises if p not in train_acc_by_noise]
  if missing:
    raise ValueError(f"train_acc_by_noise lacks noise rates {missing}")
  fig, axes = new_figure(2, len(noises), panel=(3.4, 2.6), sharex=True)
  palette = ["black", "tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown"]
  for j, p in enumerate(noises):
    for k, (name, curve) in enumerate(curves_by_noise[p].items()):
      plot_band(axes[0, j], st, curve, name, color=palette[k % len(palette)], logx=logx)
    if nulls and p in nulls:
      plot_null_band(axes[0, j], st, nulls[p], color="tab:blue", logx=logx)
    plot_band(axes[1, j], st, train_acc_by_noise[p], "train acc (noisy labels)",
              color="tab:red", logx=logx, limits=ACC_LIMITS)
    style_axes(axes[0, j], ylabel="information [bits]" if j == 0 else None,
               title=f"label noise p={p}", legend=j == 0)
    style_axes(axes[1, j], xlabel=STEP_LABEL, ylabel="train accuracy" if j == 0 else None,
               legend=j == 0)
  return fig


def plot_surrogates(steps: ArrayLike, acc: Mapping[str, ArrayLike],
                    mu_over_i: Mapping[str, ArrayLike], acc_l: ArrayLike,
                    t0_steps: ArrayLike | None = None, title: str = "",
                    logx: bool = True) -> Figure:
  """Accuracy of F_t on each test set (the real one first, then surrogates) and μ/I(F;Y) on
  each, [S, E] per name with 95% CI bands; acc(L) dotted, mean T_0 dashed."""
  st = np.asarray(steps, dtype=np.float64).ravel()
  fig, axes = new_figure(1, 2, panel=(4.6, 3.2))
  left, right = axes[0]
  for i, (name, v) in enumerate(acc.items()):
    plot_band(left, st, v, name, color="black" if i == 0 else f"C{i - 1}", logx=logx,
              limits=ACC_LIMITS)
  for i, (name, v) in enumerate(mu_over_i.items()):
    plot_band(right, st, v, name, color="black" if i == 0 else f"C{i - 1}", logx=logx)
  left.axhline(float(np.nanmean(acc_l)), color="C3", linestyle=":", linewidth=1, label="acc(L)")
  t0 = mean_positive(t0_steps)
  for ax in (left, right):
    if t0 is not None:
      ax.axvline(t0, color="C3", linestyle="--", linewidth=1, label="T_0" if ax is left else None)
  style_axes(left, "SGD step", "accuracy of F_t", title, legend=True)
  right.set_ylim(-0.05, 1.05)  # early ratios of tiny I(F;Y) are noise
  style_axes(right, "SGD step", "μ_Y(F_t;L) / I(F_t;Y)", "what L explains, per test set")
  return fig


def plot_kernel_regime(curves: Mapping[str, tuple[ArrayLike, ArrayLike, ArrayLike, ArrayLike]],
                       title: str = "", logx: bool = True) -> Figure:
  """Per label (e.g. a width): (steps [E], μ_Y(F_t;F_lin,t)/I(F_t;Y) [S, E], agreement of F_t
  with F_lin,t [S, E], T_0 steps [S]); 95% CI bands, mean T_0 dashed in the curve's colour."""
  fig, axes = new_figure(1, 2, panel=(4.4, 3.0))
  left, right = axes[0]
  for i, (label, (steps, ratio, agree, t0)) in enumerate(curves.items()):
    st = np.asarray(steps, dtype=np.float64).ravel()
    plot_band(left, st, ratio, label, color=f"C{i}", logx=logx)
    plot_band(right, st, agree, label, color=f"C{i}", logx=logx, limits=ACC_LIMITS)
    t0m = mean_positive(t0)
    for ax in (left, right):
      if t0m is not None:
        ax.axvline(t0m, color=f"C{i}", linestyle="--", linewidth=0.8)
  left.set_ylim(-0.05, 1.05)
  style_axes(left, "SGD step", "μ_Y(F_t;F_lin,t) / I(F_t;Y)", title, legend=True)
  style_axes(right, "SGD step", "agreement of F_t and F_lin,t", "dashed: T_0 (vs linear L)")
  return fig


def plot_mi_vs_accuracy(acc_grid: ArrayLike, curve: ArrayLike,
                        measured_acc: ArrayLike | None = None,
                        measured_mi: ArrayLike | None = None) -> Figure:
  """Fig. 3: theoretical I(F;Y) = 1 − h(a) for unbiased binary F, Y, with measured points."""
  fig, axes = new_figure(panel=(3.6, 3.0))
  ax = axes[0, 0]
  ax.plot(np.asarray(acc_grid), np.asarray(curve), color="black", label="1 − h(a)")
  if measured_acc is not None and measured_mi is not None:
    ma, mm = np.asarray(measured_acc).ravel(), np.asarray(measured_mi).ravel()
    if ma.shape != mm.shape:
      raise ValueError(f"measured_acc {ma.shape} and measured_mi {mm.shape} differ")
    ax.scatter(ma, mm, s=14, color="tab:red", zorder=3, label="measured")
  style_axes(ax, xlabel="P[F = Y]", ylabel="I(F;Y) [bits]", legend=True)
  return fig


def plot_decision_boundaries(grid_x: ArrayLike, grid_y: ArrayLike,
                             snapshots: Sequence[ArrayLike], steps: Sequence[int],
                             x_train: ArrayLike, y_train: ArrayLike, flipped: ArrayLike,
                             titles: Sequence[str] | None = None, ncols: int = 4) -> Figure:
  """Fig. 1 (right): predicted regions at several steps on a 2-D grid.

  ``snapshots[i]``: [len(grid_y), len(grid_x)] predicted classes (row = y, column = x, as
  ``np.meshgrid(grid_x, grid_y)``). Training points are coloured by their (noisy) label;
  flipped labels are additionally marked with a black x. The unit circle is drawn.
  """
  gx, gy = np.asarray(grid_x).ravel(), np.asarray(grid_y).ravel()
  n = len(snapshots)
  if n == 0:
    raise ValueError("snapshots is empty")
  if len(steps) != n:
    raise ValueError(f"steps has {len(steps)} entries, snapshots has {n}")
  if titles is not None and len(titles) != n:
    raise ValueError(f"titles has {len(titles)} entries, snapshots has {n}")
  xt, yt = np.asarray(x_train), np.asarray(y_train).ravel()
  fl = np.asarray(flipped, dtype=bool).ravel()
  if xt.ndim != 2 or xt.shape[1] != 2 or xt.shape[0] != yt.size or fl.size != yt.size:
    raise ValueError(f"x_train must be [n, 2] with y_train, flipped [n]; got {xt.shape}, "
                     f"{yt.shape}, {fl.shape}")
  snaps = [np.asarray(s) for s in snapshots]
  for i, s in enumerate(snaps):
    if s.shape != (gy.size, gx.size):
      raise ValueError(f"snapshots[{i}] must be [{gy.size}, {gx.size}], got {s.shape}")
  k = int(max([int(np.max(s)) for s in snaps] + [int(yt.max()) if yt.size else 0])) + 1
  base = [mcolors.to_rgba(f"C{c % 10}") for c in range(k)]
  region_cmap = mcolors.ListedColormap([(r, g, b, 0.25) for r, g, b, _ in base])
  point_cmap = mcolors.ListedColormap(base)
  ncols = max(1, min(ncols, n))
  nrows = -(-n // ncols)
  fig, axes = new_figure(nrows, ncols, panel=(2.6, 2.6))
  theta = np.linspace(0.0, 2.0 * np.pi, 256)
  for i, ax in enumerate(axes.ravel()):
    if i >= n:
      fig.delaxes(ax)
      continue
    ax.pcolormesh(gx, gy, snaps[i], cmap=region_cmap, vmin=-0.5, vmax=k - 0.5,
                  shading="nearest")
    ax.plot(np.cos(theta), np.sin(theta), color="gray", linewidth=0.8)
    ax.scatter(xt[:, 0], xt[:, 1], c=yt, cmap=point_cmap, vmin=-0.5, vmax=k - 0.5, s=6,
               linewidths=0)
    if fl.any():
      ax.scatter(xt[fl, 0], xt[fl, 1], marker="x", color="black", s=14, linewidths=0.8)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(titles[i] if titles is not None else f"step {int(steps[i])}",
                 fontsize=FONT["title"])
  return fig


def plot_theorem1(steps: ArrayLike, train_acc: Mapping[str, ArrayLike],
                  test_acc: Mapping[str, ArrayLike], logx: bool = True) -> Figure:
  """Theorem 1 simulation: clean test accuracy (solid) and noisy train accuracy (dashed).

  One colour per setting label (keys of ``test_acc``; ``train_acc`` must have the same keys).
  """
  if set(train_acc) != set(test_acc):
    raise ValueError(f"train_acc keys {sorted(train_acc)} != test_acc keys {sorted(test_acc)}")
  st = np.asarray(steps, dtype=np.float64).ravel()
  fig, axes = new_figure(panel=(5.0, 3.2))
  ax = axes[0, 0]
  for k, label in enumerate(test_acc):
    color = f"C{k % 10}"
    plot_band(ax, st, test_acc[label], f"{label} (test, clean)", color=color, logx=logx,
              limits=ACC_LIMITS)
    plot_band(ax, st, train_acc[label], f"{label} (train, noisy)", color=color, logx=logx,
              linestyle="--", limits=ACC_LIMITS)
  style_axes(ax, xlabel=STEP_LABEL, ylabel="accuracy", legend=True)
  return fig


def plot_sweep(values: Sequence, ratios_mean: ArrayLike, ratios_lo: ArrayLike,
               ratios_hi: ArrayLike, xlabel: str,
               ylabel: str = "μ_Y(F_T0;L) / I(F_T0;Y)", logx: bool = False) -> Figure:
  """Headline number (mean with CI) against a swept hyperparameter.

  Numeric ``values`` are used as x positions; anything else is placed categorically.
  """
  m = np.asarray(ratios_mean, dtype=np.float64).ravel()
  lo = np.asarray(ratios_lo, dtype=np.float64).ravel()
  hi = np.asarray(ratios_hi, dtype=np.float64).ravel()
  if not len(values) == m.size == lo.size == hi.size:
    raise ValueError(f"values, ratios_mean, ratios_lo, ratios_hi lengths differ: "
                     f"{len(values)}, {m.size}, {lo.size}, {hi.size}")
  try:
    x = np.asarray(values, dtype=np.float64)
    ticks = None
  except (TypeError, ValueError):
    x, ticks = np.arange(m.size, dtype=np.float64), [str(v) for v in values]
  fig, axes = new_figure(panel=(4.0, 3.0))
  ax = axes[0, 0]
  yerr = np.stack([np.where(np.isfinite(lo), m - lo, 0.0), np.where(np.isfinite(hi), hi - m, 0.0)])
  ax.errorbar(x, m, yerr=yerr, marker="o", markersize=4, capsize=3, color="black")
  if ticks is not None:
    ax.set_xticks(x, ticks)
  elif logx:
    ax.set_xscale("log")
  style_axes(ax, xlabel=xlabel, ylabel=ylabel)
  return fig
