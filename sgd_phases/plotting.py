"""Figures of the paper from plain numpy arrays (matplotlib only, no pyplot state).

Every ``plot_*`` function (except :func:`plot_band`, which draws into a given axes) builds a
fresh ``matplotlib.figure.Figure`` and returns it; nothing is shown and no global backend is
set, so this module is safe under ``Agg``, in tests and in notebooks. Save with
:func:`save_figure` (atomic, local path or URI: ``io_lib.write_bytes``).

Steps axis: evaluation steps start at 0, so a log axis cannot be used directly. With
``logx=True`` the x axis is ``symlog`` with a linear region below the first positive step:
points keep their true step values (0 included) and the rest is log-scaled as in the paper.

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

import io
import os
from collections.abc import Mapping, Sequence

import matplotlib.colors as mcolors
import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from numpy.typing import ArrayLike

from sgd_phases import io_lib, stats

STEP_LABEL = "SGD step"
I_FY_NAME = "I(F_t;Y)"
ACC_LIMITS = (0.0, 1.0)  # accuracy bands are clipped to what an accuracy can be
_FONT = {"label": 9, "tick": 8, "legend": 7, "title": 10}


def _new_figure(nrows: int = 1, ncols: int = 1, *, panel: tuple[float, float] = (4.0, 2.8),
                sharex: bool | str = False, squeeze: bool = False):
  fig = Figure(figsize=(panel[0] * ncols, panel[1] * nrows), layout="constrained")
  axes = fig.subplots(nrows, ncols, sharex=sharex, squeeze=squeeze)
  return fig, axes


def _style(ax: Axes, xlabel: str | None = None, ylabel: str | None = None,
           title: str | None = None, legend: bool = False) -> None:
  if xlabel is not None:
    ax.set_xlabel(xlabel, fontsize=_FONT["label"])
  if ylabel is not None:
    ax.set_ylabel(ylabel, fontsize=_FONT["label"])
  if title:
    ax.set_title(title, fontsize=_FONT["title"])
  ax.tick_params(labelsize=_FONT["tick"])
  ax.grid(True, alpha=0.3, linewidth=0.5)
  if legend and ax.get_legend_handles_labels()[0]:
    ax.legend(fontsize=_FONT["legend"], frameon=False)


def _set_step_scale(ax: Axes, steps: np.ndarray, logx: bool) -> None:
  if not logx:
    return
  pos = steps[steps > 0]
  ax.set_xscale("symlog", linthresh=float(pos.min()) if pos.size else 1.0, linscale=0.3)


def _seed_rows(values: ArrayLike, steps: np.ndarray, name: str) -> np.ndarray:
  v = np.asarray(values, dtype=np.float64)
  v = v[None] if v.ndim == 1 else v
  if v.ndim != 2 or v.shape[1] != steps.shape[0]:
    raise ValueError(f"{name} must be [S, E={steps.shape[0]}] or [E], got {np.shape(values)}")
  return v


def _mean_positive(x: ArrayLike | None) -> float | None:
  """Mean of the non-negative finite entries (−1 marks 'never'); None if there are none."""
  if x is None:
    return None
  v = np.asarray(x, dtype=np.float64).ravel()
  v = v[np.isfinite(v) & (v >= 0)]
  return float(v.mean()) if v.size else None


def plot_band(ax: Axes, steps: ArrayLike, values: ArrayLike, label: str | None,
              color: str | None = None, per_seed: bool = False, logx: bool = True,
              linestyle: str = "-", limits: tuple[float, float] | None = None) -> Line2D:
  """Mean over seeds with a 95% Student-t band (drawn only when S ≥ 2) into ``ax``.

  ``values``: [S, E] (or [E], a single seed). ``per_seed`` adds thin per-seed lines.
  ``limits``: the range the quantity can take (e.g. (0, 1) for accuracies): the band is clipped
  to it. Returns the mean line.
  """
  st = np.asarray(steps, dtype=np.float64).ravel()
  v = _seed_rows(values, st, "values")
  mean, lo, hi = stats.mean_ci(v, axis=0)
  if limits is not None:
    lo, hi = np.clip(lo, *limits), np.clip(hi, *limits)
  (line,) = ax.plot(st, mean, color=color, label=label, linewidth=1.5, linestyle=linestyle)
  c = line.get_color()
  if v.shape[0] >= 2:
    ax.fill_between(st, lo, hi, color=c, alpha=0.2, linewidth=0)
  if per_seed:
    for row in v:
      ax.plot(st, row, color=c, linewidth=0.5, alpha=0.4, linestyle=linestyle)
  _set_step_scale(ax, st, logx)
  return line


def plot_null_band(ax: Axes, steps: ArrayLike, null: ArrayLike, color: str | None = None,
                   label: str | None = "null: F ⊥ L | Y (95%)", logx: bool = True) -> None:
  """The seed mean of μ under the conditional-independence null as a hatched 95% band.

  ``null``: [P, S, E] draws (``scoring.null_mu``); the band is ``stats.null_band``.
  """
  st = np.asarray(steps, dtype=np.float64).ravel()
  nul = np.asarray(null, dtype=np.float64)
  if nul.ndim != 3 or nul.shape[-1] != st.size:
    raise ValueError(f"null must be [P, S, E={st.size}], got shape {nul.shape}")
  mean, lo, hi = stats.null_band(nul)
  ax.fill_between(st, lo, hi, facecolor="none", edgecolor=color or "0.4", hatch="////",
                  linewidth=0, alpha=0.6, label=label)
  ax.plot(st, mean, color=color or "0.4", linewidth=0.8, linestyle=(0, (2, 2)))
  _set_step_scale(ax, st, logx)


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
  fig, axes = _new_figure(2, 1, sharex=True)
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
  t0 = _mean_positive(t0_steps)
  if t0 is not None:
    for ax in (top, bottom):
      ax.axvline(t0, color="tab:red", linestyle="--", linewidth=1,
                 label="T_0" if ax is top else None)
  _style(top, ylabel="information [bits]", title=title, legend=True)
  _style(bottom, xlabel=STEP_LABEL, ylabel="test accuracy", legend=True)
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
  fig, axes = _new_figure(panel=(5.0, 3.2))
  ax = axes[0, 0]
  plot_band(ax, st, i_fy, I_FY_NAME, color="black", logx=logx)
  colors = _sequential_colors(len(mus), cmap)
  for color, (name, mu) in zip(colors, mus.items()):
    plot_band(ax, st, mu, f"μ_Y(F_t;{name})", color=color, logx=logx)
    if nulls and name in nulls:
      plot_null_band(ax, st, nulls[name], color=color, logx=logx,
                     label="null: F ⊥ G_i | Y (95%)" if name == next(iter(nulls)) else None)
    p = _mean_positive(None if plateau_steps is None else plateau_steps.get(name))
    if p is not None:
      ax.axvline(p, color=color, linestyle=":", linewidth=1)
  _style(ax, xlabel=STEP_LABEL, ylabel="information [bits]", title=title, legend=True)
  return fig


def plot_by_position(positions: ArrayLike, labels: Sequence[str], i_fy: ArrayLike,
                     ratios: Mapping[str, ArrayLike], title: str = "",
                     cmap: str = "viridis") -> Figure:
  """Sequence models: one column per evaluation (``labels``, e.g. "step 500"); top: μ/I(F_t;Y)
  per reference (``ratios[name]`` [S, C, P]) at each position t, bottom: I(F_t;Y) there
  (``i_fy`` [S, C, P]). In-context learning shows as dependence on the position."""
  pos, info = np.asarray(positions, np.float64).ravel(), np.asarray(i_fy, np.float64)
  fig, axes = _new_figure(2, len(labels), panel=(3.2, 2.4), sharex=True)
  colors = _sequential_colors(len(ratios), cmap)
  for j, label in enumerate(labels):
    for color, (name, r) in zip(colors, ratios.items()):
      plot_band(axes[0, j], pos, np.asarray(r)[:, j], name, color=color, logx=False)
    plot_band(axes[1, j], pos, info[:, j], I_FY_NAME, color="black", logx=False)
    _style(axes[0, j], ylabel="μ_Y(F_t;L) / I(F_t;Y)" if j == 0 else None,
           title=f"{title}{label}", legend=j == 0)
    _style(axes[1, j], xlabel="position t", ylabel="information [bits]" if j == 0 else None,
           legend=j == 0)
  return fig


SOFT_LABELS = {"kl_ref_f": "KL(p_ref ‖ p_F)", "kl_f_ref": "KL(p_F ‖ p_ref)",
               "js": "JS(p_ref, p_F)"}


def plot_soft(steps: ArrayLike, soft: Mapping[str, Mapping[str, ArrayLike]], title: str = "",
              logx: bool = True, cmap: str = "viridis") -> Figure:
  """KL panels beside μ: one panel per soft measure (``SOFT_LABELS``, bits), one band per
  reference (``soft[name][field]``: [S, E], dict order = complexity order)."""
  st = np.asarray(steps, dtype=np.float64).ravel()
  fields = [f for f in SOFT_LABELS if any(f in m for m in soft.values())]
  fig, axes = _new_figure(1, len(fields), panel=(3.6, 2.8))
  for i, (ax, field) in enumerate(zip(axes[0], fields)):
    for color, (name, m) in zip(_sequential_colors(len(soft), cmap), soft.items()):
      if field in m:
        plot_band(ax, st, m[field], name, color=color, logx=logx,
                  limits=(0.0, 1.0 if field == "js" else np.inf))
    _style(ax, xlabel=STEP_LABEL, ylabel=f"{SOFT_LABELS[field]} [bits]",
           title=title if i == 0 else None, legend=i == 0)
  return fig


def plot_mixture(steps: ArrayLike, names: Sequence[str], weights: ArrayLike,
                 residual_kl: ArrayLike | None = None, title: str = "", logx: bool = True,
                 cmap: str = "viridis") -> Figure:
  """F_t as a mixture of its references: the seed-mean weights [S, E, R + 1] stacked over steps
  (the last, uniform, component grey) and, below, the fit's residual KL [S, E] in bits."""
  st = np.asarray(steps, dtype=np.float64).ravel()
  fig, axes = _new_figure(2 if residual_kl is not None else 1, 1, panel=(5.0, 2.6),
                          sharex=True)
  ax = axes[0, 0]
  w = np.nanmean(np.asarray(weights, dtype=np.float64), axis=0).T  # [R + 1, E]
  colors = _sequential_colors(len(names) - 1, cmap) + ["0.8"]
  ax.stackplot(st, np.nan_to_num(w), labels=list(names), colors=colors, alpha=0.9)
  ax.set_ylim(0.0, 1.0)
  _set_step_scale(ax, st, logx)
  _style(ax, ylabel="mixture weight", title=title, legend=True)
  if residual_kl is not None:
    plot_band(axes[1, 0], st, residual_kl, "KL(p_F ‖ Σ w_r p_r)", color="black", logx=logx,
              limits=(0.0, np.inf))
    _style(axes[1, 0], xlabel=STEP_LABEL, ylabel="residual [bits]", legend=True)
  return fig


def _sequential_colors(n: int, cmap: str) -> list:
  cm = colormaps[cmap]
  return [cm(x) for x in np.linspace(0.15, 0.85, max(n, 1))][:n]


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
  fig, axes = _new_figure(2, len(noises), panel=(3.4, 2.6), sharex=True)
  palette = ["black", "tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown"]
  for j, p in enumerate(noises):
    for k, (name, curve) in enumerate(curves_by_noise[p].items()):
      plot_band(axes[0, j], st, curve, name, color=palette[k % len(palette)], logx=logx)
    if nulls and p in nulls:
      plot_null_band(axes[0, j], st, nulls[p], color="tab:blue", logx=logx)
    plot_band(axes[1, j], st, train_acc_by_noise[p], "train acc (noisy labels)",
              color="tab:red", logx=logx, limits=ACC_LIMITS)
    _style(axes[0, j], ylabel="information [bits]" if j == 0 else None,
           title=f"label noise p={p}", legend=j == 0)
    _style(axes[1, j], xlabel=STEP_LABEL, ylabel="train accuracy" if j == 0 else None,
           legend=j == 0)
  return fig


def plot_surrogates(steps: ArrayLike, acc: Mapping[str, ArrayLike],
                    mu_over_i: Mapping[str, ArrayLike], acc_l: ArrayLike,
                    t0_steps: ArrayLike | None = None, title: str = "",
                    logx: bool = True) -> Figure:
  """Accuracy of F_t on each test set (the real one first, then surrogates) and μ/I(F;Y) on
  each, [S, E] per name with 95% CI bands; acc(L) dotted, mean T_0 dashed."""
  st = np.asarray(steps, dtype=np.float64).ravel()
  fig, axes = _new_figure(1, 2, panel=(4.6, 3.2))
  left, right = axes[0]
  for i, (name, v) in enumerate(acc.items()):
    plot_band(left, st, v, name, color="black" if i == 0 else f"C{i - 1}", logx=logx,
              limits=ACC_LIMITS)
  for i, (name, v) in enumerate(mu_over_i.items()):
    plot_band(right, st, v, name, color="black" if i == 0 else f"C{i - 1}", logx=logx)
  left.axhline(float(np.nanmean(acc_l)), color="C3", linestyle=":", linewidth=1, label="acc(L)")
  t0 = _mean_positive(t0_steps)
  for ax in (left, right):
    if t0 is not None:
      ax.axvline(t0, color="C3", linestyle="--", linewidth=1, label="T_0" if ax is left else None)
  _style(left, "SGD step", "accuracy of F_t", title, legend=True)
  right.set_ylim(-0.05, 1.05)  # early ratios of tiny I(F;Y) are noise
  _style(right, "SGD step", "μ_Y(F_t;L) / I(F_t;Y)", "what L explains, per test set")
  return fig


def plot_kernel_regime(curves: Mapping[str, tuple[ArrayLike, ArrayLike, ArrayLike, ArrayLike]],
                       title: str = "", logx: bool = True) -> Figure:
  """Per label (e.g. a width): (steps [E], μ_Y(F_t;F_lin,t)/I(F_t;Y) [S, E], agreement of F_t
  with F_lin,t [S, E], T_0 steps [S]); 95% CI bands, mean T_0 dashed in the curve's colour."""
  fig, axes = _new_figure(1, 2, panel=(4.4, 3.0))
  left, right = axes[0]
  for i, (label, (steps, ratio, agree, t0)) in enumerate(curves.items()):
    st = np.asarray(steps, dtype=np.float64).ravel()
    plot_band(left, st, ratio, label, color=f"C{i}", logx=logx)
    plot_band(right, st, agree, label, color=f"C{i}", logx=logx, limits=ACC_LIMITS)
    t0m = _mean_positive(t0)
    for ax in (left, right):
      if t0m is not None:
        ax.axvline(t0m, color=f"C{i}", linestyle="--", linewidth=0.8)
  left.set_ylim(-0.05, 1.05)
  _style(left, "SGD step", "μ_Y(F_t;F_lin,t) / I(F_t;Y)", title, legend=True)
  _style(right, "SGD step", "agreement of F_t and F_lin,t", "dashed: T_0 (vs linear L)")
  return fig


def plot_mi_vs_accuracy(acc_grid: ArrayLike, curve: ArrayLike,
                        measured_acc: ArrayLike | None = None,
                        measured_mi: ArrayLike | None = None) -> Figure:
  """Fig. 3: theoretical I(F;Y) = 1 − h(a) for unbiased binary F, Y, with measured points."""
  fig, axes = _new_figure(panel=(3.6, 3.0))
  ax = axes[0, 0]
  ax.plot(np.asarray(acc_grid), np.asarray(curve), color="black", label="1 − h(a)")
  if measured_acc is not None and measured_mi is not None:
    ma, mm = np.asarray(measured_acc).ravel(), np.asarray(measured_mi).ravel()
    if ma.shape != mm.shape:
      raise ValueError(f"measured_acc {ma.shape} and measured_mi {mm.shape} differ")
    ax.scatter(ma, mm, s=14, color="tab:red", zorder=3, label="measured")
  _style(ax, xlabel="P[F = Y]", ylabel="I(F;Y) [bits]", legend=True)
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
  fig, axes = _new_figure(nrows, ncols, panel=(2.6, 2.6))
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
                 fontsize=_FONT["title"])
  return fig


def plot_theorem1(steps: ArrayLike, train_acc: Mapping[str, ArrayLike],
                  test_acc: Mapping[str, ArrayLike], logx: bool = True) -> Figure:
  """Theorem 1 simulation: clean test accuracy (solid) and noisy train accuracy (dashed).

  One colour per setting label (keys of ``test_acc``; ``train_acc`` must have the same keys).
  """
  if set(train_acc) != set(test_acc):
    raise ValueError(f"train_acc keys {sorted(train_acc)} != test_acc keys {sorted(test_acc)}")
  st = np.asarray(steps, dtype=np.float64).ravel()
  fig, axes = _new_figure(panel=(5.0, 3.2))
  ax = axes[0, 0]
  for k, label in enumerate(test_acc):
    color = f"C{k % 10}"
    plot_band(ax, st, test_acc[label], f"{label} (test, clean)", color=color, logx=logx,
              limits=ACC_LIMITS)
    plot_band(ax, st, train_acc[label], f"{label} (train, noisy)", color=color, logx=logx,
              linestyle="--", limits=ACC_LIMITS)
  _style(ax, xlabel=STEP_LABEL, ylabel="accuracy", legend=True)
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
  fig, axes = _new_figure(panel=(4.0, 3.0))
  ax = axes[0, 0]
  yerr = np.stack([np.where(np.isfinite(lo), m - lo, 0.0), np.where(np.isfinite(hi), hi - m, 0.0)])
  ax.errorbar(x, m, yerr=yerr, marker="o", markersize=4, capsize=3, color="black")
  if ticks is not None:
    ax.set_xticks(x, ticks)
  elif logx:
    ax.set_xscale("log")
  _style(ax, xlabel=xlabel, ylabel=ylabel)
  return fig


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 150) -> str:
  """Writes ``fig`` atomically to ``path`` (a local path or URI; ``io_lib.write_bytes``); the
  format is the file extension (default png). Returns ``path`` as a string."""
  path = os.fspath(path)
  fmt = os.path.splitext(path)[1].lstrip(".").lower() or "png"
  buf = io.BytesIO()
  fig.savefig(buf, format=fmt, dpi=dpi)
  io_lib.write_bytes(path, buf.getvalue())
  return path
