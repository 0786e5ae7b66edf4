"""Figures beyond the paper's: the soft measures and a sequence model's curves by position.

:func:`plot_soft` (KL/JS panels, one band per reference) and :func:`plot_mixture` (F_t as a
mixture of its references) are drawn by ``soft_scoring`` for every run that records
probabilities; :func:`plot_by_position` by ``experiments.sequence_phases``. Each returns a fresh
``matplotlib.figure.Figure``; :mod:`sgd_phases.plotting` re-exports them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from numpy.typing import ArrayLike

from sgd_phases.plot_lib import (
    I_FY_NAME, STEP_LABEL, new_figure, plot_band, sequential_colors, set_step_scale, style_axes)


def plot_by_position(positions: ArrayLike, labels: Sequence[str], i_fy: ArrayLike,
                     ratios: Mapping[str, ArrayLike], title: str = "",
                     cmap: str = "viridis") -> Figure:
  """Sequence models: one column per evaluation (``labels``, e.g. "step 500"); top: μ/I(F_t;Y)
  per reference (``ratios[name]`` [S, C, P]) at each position t, bottom: I(F_t;Y) there
  (``i_fy`` [S, C, P]). In-context learning shows as dependence on the position."""
  pos, info = np.asarray(positions, np.float64).ravel(), np.asarray(i_fy, np.float64)
  fig, axes = new_figure(2, len(labels), panel=(3.2, 2.4), sharex=True)
  colors = sequential_colors(len(ratios), cmap)
  for j, label in enumerate(labels):
    for color, (name, r) in zip(colors, ratios.items()):
      plot_band(axes[0, j], pos, np.asarray(r)[:, j], name, color=color, logx=False)
    plot_band(axes[1, j], pos, info[:, j], I_FY_NAME, color="black", logx=False)
    style_axes(axes[0, j], ylabel="μ_Y(F_t;L) / I(F_t;Y)" if j == 0 else None,
               title=f"{title}{label}", legend=j == 0)
    style_axes(axes[1, j], xlabel="position t", ylabel="information [bits]" if j == 0 else None,
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
  fig, axes = new_figure(1, len(fields), panel=(3.6, 2.8))
  for i, (ax, field) in enumerate(zip(axes[0], fields)):
    for color, (name, m) in zip(sequential_colors(len(soft), cmap), soft.items()):
      if field in m:
        plot_band(ax, st, m[field], name, color=color, logx=logx,
                  limits=(0.0, 1.0 if field == "js" else np.inf))
    style_axes(ax, xlabel=STEP_LABEL, ylabel=f"{SOFT_LABELS[field]} [bits]",
               title=title if i == 0 else None, legend=i == 0)
  return fig


def plot_mixture(steps: ArrayLike, names: Sequence[str], weights: ArrayLike,
                 residual_kl: ArrayLike | None = None, title: str = "", logx: bool = True,
                 cmap: str = "viridis") -> Figure:
  """F_t as a mixture of its references: the seed-mean weights [S, E, R + 1] stacked over steps
  (the last, uniform, component grey) and, below, the fit's residual KL [S, E] in bits."""
  st = np.asarray(steps, dtype=np.float64).ravel()
  fig, axes = new_figure(2 if residual_kl is not None else 1, 1, panel=(5.0, 2.6),
                         sharex=True)
  ax = axes[0, 0]
  w = np.nanmean(np.asarray(weights, dtype=np.float64), axis=0).T  # [R + 1, E]
  colors = sequential_colors(len(names) - 1, cmap) + ["0.8"]
  ax.stackplot(st, np.nan_to_num(w), labels=list(names), colors=colors, alpha=0.9)
  ax.set_ylim(0.0, 1.0)
  set_step_scale(ax, st, logx)
  style_axes(ax, ylabel="mixture weight", title=title, legend=True)
  if residual_kl is not None:
    plot_band(axes[1, 0], st, residual_kl, "KL(p_F ‖ Σ w_r p_r)", color="black", logx=logx,
              limits=(0.0, np.inf))
    style_axes(axes[1, 0], xlabel=STEP_LABEL, ylabel="residual [bits]", legend=True)
  return fig
