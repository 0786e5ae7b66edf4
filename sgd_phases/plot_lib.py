"""What every figure shares: panels, axes style, the step axis, bands over seeds, saving.

No pyplot state: :func:`new_figure` builds a fresh ``matplotlib.figure.Figure`` (safe under
``Agg``, in tests and in notebooks) and :func:`save_figure` writes it atomically to a local path
or URI. :func:`plot_band` and :func:`plot_null_band` draw into a given axes; the figures built
from them are in :mod:`sgd_phases.plotting` (which re-exports every public name here) and
:mod:`sgd_phases.soft_plots`.

Steps axis: evaluation steps start at 0, so a log axis cannot be used directly. With
``logx=True`` the x axis is ``symlog`` with a linear region below the first positive step:
points keep their true step values (0 included) and the rest is log-scaled as in the paper.
"""

from __future__ import annotations

import io
import os

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
FONT = {"label": 9, "tick": 8, "legend": 7, "title": 10}


def new_figure(nrows: int = 1, ncols: int = 1, *, panel: tuple[float, float] = (4.0, 2.8),
               sharex: bool | str = False, squeeze: bool = False):
  """A fresh constrained-layout Figure of ``nrows`` x ``ncols`` panels, each ``panel`` inches
  (axes as a 2-D array unless ``squeeze``)."""
  fig = Figure(figsize=(panel[0] * ncols, panel[1] * nrows), layout="constrained")
  axes = fig.subplots(nrows, ncols, sharex=sharex, squeeze=squeeze)
  return fig, axes


def style_axes(ax: Axes, xlabel: str | None = None, ylabel: str | None = None,
               title: str | None = None, legend: bool = False) -> None:
  """Labels, title, ticks and grid in the figures' font sizes; a legend if asked and non-empty."""
  if xlabel is not None:
    ax.set_xlabel(xlabel, fontsize=FONT["label"])
  if ylabel is not None:
    ax.set_ylabel(ylabel, fontsize=FONT["label"])
  if title:
    ax.set_title(title, fontsize=FONT["title"])
  ax.tick_params(labelsize=FONT["tick"])
  ax.grid(True, alpha=0.3, linewidth=0.5)
  if legend and ax.get_legend_handles_labels()[0]:
    ax.legend(fontsize=FONT["legend"], frameon=False)


def set_step_scale(ax: Axes, steps: np.ndarray, logx: bool) -> None:
  """With ``logx``: a symlog x axis, linear below the first positive step (see above)."""
  if not logx:
    return
  pos = steps[steps > 0]
  ax.set_xscale("symlog", linthresh=float(pos.min()) if pos.size else 1.0, linscale=0.3)


def seed_rows(values: ArrayLike, steps: np.ndarray, name: str) -> np.ndarray:
  """``values`` as float64 [S, E] ([E]: one seed), or a ValueError naming ``name``."""
  v = np.asarray(values, dtype=np.float64)
  v = v[None] if v.ndim == 1 else v
  if v.ndim != 2 or v.shape[1] != steps.shape[0]:
    raise ValueError(f"{name} must be [S, E={steps.shape[0]}] or [E], got {np.shape(values)}")
  return v


def mean_positive(x: ArrayLike | None) -> float | None:
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
  v = seed_rows(values, st, "values")
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
  set_step_scale(ax, st, logx)
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
  set_step_scale(ax, st, logx)


def sequential_colors(n: int, cmap: str) -> list:
  """``n`` colours spread over ``cmap`` (ends trimmed), in order: complexity order of a ladder."""
  cm = colormaps[cmap]
  return [cm(x) for x in np.linspace(0.15, 0.85, max(n, 1))][:n]


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 150) -> str:
  """Writes ``fig`` atomically to ``path`` (a local path or URI; ``io_lib.write_bytes``); the
  format is the file extension (default png). Returns ``path`` as a string."""
  path = os.fspath(path)
  fmt = os.path.splitext(path)[1].lstrip(".").lower() or "png"
  buf = io.BytesIO()
  fig.savefig(buf, format=fmt, dpi=dpi)
  io_lib.write_bytes(path, buf.getvalue())
  return path
