"""Where retention holds: a map of what SGD gives back of L when it memorises label noise.

The paper's claim 3: F keeps what a linear classifier L explains, μ_Y(F_t;L) does not decrease
late in training even while F interpolates noisy labels. ``experiments/retention.py`` found it a
matter of degree (MNIST: μ ends 0.002 bits below its peak at p = 0, 0.086 at p = 0.2). This
experiment maps that degree over label noise p × one more field (``map_field``: width by
default; any config field, e.g. ``optimizer.learning_rate`` or ``dataset.train_size``).

Every cell is an ordinary retention-style engine workdir (F, ``linear`` L trained on the same
noisy labels, ``f_t0`` = F at T_0, the conditional-independence null), run as ONE sweep by
``sgd_phases.sweep.run_sweep`` (resumable, failure-isolated; cells differing only in p or the
learning rate are trained as one nested (cell × seed) vmap where the engine vmaps seeds on this
backend). Per cell, means with 95% CIs over seeds: peak μ_Y(F_t;L) and its step, μ at T_0 and
at the end, μ_end/I(L;Y), the loss from peak μ_peak − μ_end (paired per seed; ≥ 0 by
construction), μ_Y(F_t;F_T0) at the end, clean/noisy train and test accuracy, the first step
where train accuracy on the noisy labels reaches ``target_train_acc`` and whether every seed
reached it within the step cap (``interpolates``). Each μ is reported with its null
(``stats.versus_null``; ``stats.ratio_versus_null`` for a ratio: ``<m>.value``,
``<m>.null.{mean,lo,hi}``, ``<m>.p_value``, ``<m>.excess``).

Tasks (``get_config("<task>[,quick]")``):

* ``mnist`` (default when the offline MNIST files exist): MNIST 0–4 vs 5–9, 4000 training
  examples, MLP with 2 hidden layers of width w ∈ {32, 128, 512, 1024}, SGD lr 0.1, batch 64,
  8000 steps (the cap: 128 epochs), p ∈ {0, 0.1, 0.2, 0.3, 0.4}, 3 seeds, 40 log-spaced
  evaluations on the full 10k test set: 20 cells. Why this size: 4000 examples, width 512 and
  8000 steps are retention.py's settings, so its p ≤ 0.2 numbers are a cross-check of the
  w = 512 row; a factor of 4 per row spans a net that barely memorises 40% noise within the cap
  (w = 32: 2 of 3 seeds reach 99% at p = 0.4) to one that memorises it by step ~3200
  (w = 1024). Sizing, one cell (3 seeds) measured first on the shared 2-core CPU: w = 32 22 s
  CPU time, w = 512 86 s, w = 1024 210 s (cost grows with the parameter count: 26k, 0.67M,
  1.9M). The full map then took 21 min wall (1267 s, CPU shared with other jobs): rows w = 32
  (one nested program) and 128 3.5 min together, w = 512 7 min, w = 1024 10.5 min. A w = 2048
  row (~9x w = 512 per cell, ~1 h) did not fit.
* ``fashion``: the same on Fashion-MNIST (not run).
* ``sinusoid_hd`` (default without the real data; no download): 2000 points in 20-d.
* ``quick``: synthetic, 300 points in 10-d, MLP 64×2, p ∈ {0, 0.2} × lr ∈ {0.1, 0.3}, 3 seeds,
  600 steps; one nested program on CPU; ~20 s.

    python -m experiments.retention_map --workdir=runs/retention_map_mnist
    python -m experiments.retention_map --workdir=/tmp/rmq \\
        --config=experiments/retention_map.py:quick

Writes ``<workdir>/<cell>/`` engine workdirs (each with its summary.json and figure),
``summary.csv`` (one row per cell), ``summary.json`` (the sweep rows and a compact ``table``),
``figures/retention_map_<measure>.png`` (heatmaps; hatched: not interpolating) and
``figures/retention_map_curves.png``.
"""

from __future__ import annotations

import os
import time
import types
from collections.abc import Sequence
from typing import Any

import ml_collections
import numpy as np
from etils import epath
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from experiments import common
from sgd_phases import cli, io_lib, plotting, results, stats, sweep

NAME = "retention_map"
NOISE_FIELD = "dataset.label_noise"
TASKS = common.RETENTION_TASKS
# Heatmaps: (flat summary key, title, key of its null or None, number format).
HEATMAPS = (
    ("mu_l_peak.value", "peak μ_Y(F_t;L) [bits]", "mu_l_peak.null", ".3f"),
    ("mu_l_end.value", "μ_Y(F_T;L) at the end [bits]", "mu_l_end.null", ".3f"),
    ("mu_l_loss_from_peak.value", "loss from peak μ_peak − μ_end [bits]",
     "mu_l_loss_from_peak.null", ".3f"),
    ("mu_l_loss_from_peak.excess", "loss from peak above its null [bits]", None, ".3f"),
    ("mu_l_end_over_i_ly.value", "μ_Y(F_T;L) / I(L;Y) at the end", "mu_l_end_over_i_ly.null",
     ".2f"),
    ("mu_l_end_over_i_ly.excess", "excess over the null of μ_end/I(L;Y)", None, ".2f"),
    ("mu_f_t0_end.value", "μ_Y(F_T;F_T0) at the end [bits]", "mu_f_t0_end.null", ".3f"),
    ("mu_l_peak_step", "step of peak μ_Y(F_t;L)", None, ".0f"),
    ("interp_step", "first step with noisy-train acc ≥ target", None, ".0f"),
    ("train_acc_end", "train accuracy on the noisy labels", None, ".3f"),
    ("train_acc_clean_end", "train accuracy on the clean labels", None, ".3f"),
    ("test_acc_end", "test accuracy (clean labels)", None, ".3f"),
)

default_task = common.retention_default_task


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Config of the map: ``arg`` = "<task>[,quick]" (``quick`` alone: synthetic)."""
  quick = "quick" in cli.parse_arg(arg)
  task, _ = common.parse_task(arg, TASKS, "sinusoid_hd" if quick else default_task())
  c = common.retention_base_config(task, NAME, quick)
  c.num_seeds = 3
  c.eval.num_points = 40            # log-spaced; the peak step is known to ~25%
  c.noise_rates = (0.0, 0.1, 0.2, 0.3, 0.4)  # the map's first axis: label noise p (columns)
  c.map_field = "model_kwargs.width"    # the map's second axis (rows): any config field
  c.map_values = (32, 128, 512, 1024)   # its values
  c.target_train_acc = 0.99         # "interpolates": every seed's noisy-label train accuracy
  c.vectorize = "auto"              # sweep.run_sweep: nested (cell × seed) programs
  if quick:  # seconds on CPU: 4 cells, one nested program
    c.num_steps = 600
    c.eval.num_points = 15
    c.checkpoint_every = 0
    c.progress = False
    c.noise_rates = (0.0, 0.2)
    c.map_field = "optimizer.learning_rate"
    c.map_values = (0.1, 0.3)
    c.references.linear.num_steps = 150
    c.model_kwargs.width = 64
    c.null.num_permutations = 50
    common.quick_data(c)
  return c


# ------------------------------------------------------------------------------- one cell
def cell_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The engine config of one cell (``common.engine_config``: the engine's fields)."""
  return common.engine_config(config)


def _with_null(observed: np.ndarray, null: np.ndarray | None,
               denominator: np.ndarray | None = None) -> dict[str, Any]:
  """``stats.versus_null`` (bits) or, with a ``denominator``, ``stats.ratio_versus_null``, with
  its p-value lifted to the top (a summary.csv column); the value alone without a null."""
  if null is None:
    return {"value": stats.summarize(observed) if denominator is None else
            stats.summarize(stats.ratio(observed, denominator), bounded=True)}
  v = (stats.versus_null(observed, null) if denominator is None else
       stats.ratio_versus_null(observed, null, denominator))
  return {**v, "p_value": v["null"]["p_value"]}


def cell_summary(res: results.Results, target: float) -> dict[str, Any]:
  """The numbers of one cell (means, 95% CIs over seeds; each μ beside its null)."""
  a = res.arrays
  steps, t0 = a["steps"], a["t0_index"]
  last = len(steps) - 1
  m_l, m_0 = res.measures("linear"), res.measures("f_t0")
  null_l, null_0 = res.null("linear"), res.null("f_t0")
  mu = m_l["mu"]
  peak_at = np.nanargmax(mu, axis=1)
  peak, end = stats.at_index(mu, peak_at), mu[:, last]
  at = lambda x, idx: None if x is None else stats.at_index(x, idx)
  i_ly = m_l["i_ly"][:, last]
  train_end = a["train_acc"][:, last]
  reached = a["train_acc"] >= target
  interp = np.where(reached.any(axis=1), steps[reached.argmax(axis=1)], np.nan)
  with np.errstate(invalid="ignore", divide="ignore"):
    end_over_peak = end / peak
  return {
      "t0_found": int((t0 >= 0).sum()),
      "t0_step": stats.summarize(stats.step_at(steps, t0), bounded=True),
      # chosen over evaluations: null = the same choice per draw (stats.selected_null)
      "mu_l_peak": _with_null(peak, None if null_l is None else stats.selected_null(null_l)),
      "mu_l_peak_step": stats.summarize(steps[peak_at], bounded=True),
      "mu_l_t0": _with_null(stats.at_index(mu, t0), at(null_l, t0)),
      "mu_l_end": _with_null(end, None if null_l is None else null_l[:, :, last]),
      "mu_l_end_over_i_ly": _with_null(end, None if null_l is None else null_l[:, :, last],
                                       i_ly),
      "mu_l_loss_from_peak": _with_null(  # paired per seed, >= 0; null: per-draw max − end
          peak - end, None if null_l is None else
          stats.selected_null(null_l, "max_minus_end", np.full(len(end), last))),
      "mu_l_end_over_peak": stats.summarize(end_over_peak, bounded=True),
      "mu_l_change_from_t0": stats.summarize(end - stats.at_index(mu, t0)),
      "mu_f_t0_end": _with_null(m_0["mu"][:, last],
                                None if null_0 is None else null_0[:, :, last]),
      "i_ly": stats.summarize(i_ly),
      "i_fy_end": stats.summarize(m_l["i_fy"][:, last]),
      "acc_l": stats.summarize(res.reference("linear", "test_acc"), bounded=True),
      "train_acc_end": stats.summarize(train_end, bounded=True),  # on the noisy labels
      "train_acc_end_min": float(train_end.min()),
      "train_acc_clean_end": stats.summarize(a["train_acc_clean"][:, last], bounded=True),
      "test_acc_end": stats.summarize(a["test_acc"][:, last], bounded=True),
      "interp_step": stats.summarize(interp, bounded=True),  # NaN seeds: never reached
      "interp_seeds": int(np.isfinite(interp).sum()),
      "interpolates": bool(train_end.min() >= target),
  }


def run_cell(config: ml_collections.ConfigDict, workdir: str, *,
             trained_f: Any = None) -> dict[str, Any]:
  """One cell: the engine run, its summary.json and figure (``trained_f``: the sweep's)."""
  started = time.time()
  from sgd_phases import train_lib  # local import: keeps `get_config` light for config_flags

  c = cell_config(config)
  res = train_lib.train(c, workdir, trained_f=trained_f)
  summary = {**common.header(NAME, c, res), "cell": True,
             "label_noise": float(c.dataset.label_noise),
             "target_train_acc": float(config.target_train_acc),
             **cell_summary(res, float(config.target_train_acc))}
  return common.finish(workdir, summary, make_figures, config=config, started=started)


# What sweep.run_sweep runs at each grid point.
CELL = types.SimpleNamespace(__name__=f"{__name__}.cell", run=run_cell)


# -------------------------------------------------------------------------------- the map
def map_grid(config: ml_collections.ConfigDict) -> list[dict[str, Any]]:
  """The cells: {map_field: v, dataset.label_noise: p}, rows = map values, columns = p."""
  if not config.noise_rates or any(not 0.0 <= p < 0.5 for p in config.noise_rates):
    raise ValueError(f"config.noise_rates: need a non-empty list in [0, 0.5), got "
                     f"{list(config.noise_rates)}")
  if not config.map_values:
    raise ValueError("config.map_values: need a non-empty list")
  field = sweep.resolve_field(config, config.map_field)
  if field == NOISE_FIELD:
    raise ValueError(f"config.map_field: {NOISE_FIELD} is already the first axis")
  return sweep.make_grid(config, {field: list(config.map_values),
                                  NOISE_FIELD: list(config.noise_rates)})


def engine_runs(config: ml_collections.ConfigDict) -> list[ml_collections.ConfigDict]:
  """One engine run per cell (``map_grid``: bad axes are refused; ``cell_config``)."""
  return [cell_config(sweep.apply_overrides(config, o)) for o in map_grid(config)]


_TABLE_KEYS = ("mu_l_peak", "mu_l_peak_step", "mu_l_t0", "mu_l_end", "mu_l_end_over_i_ly",
               "mu_l_loss_from_peak", "mu_f_t0_end", "i_ly", "train_acc_end",
               "train_acc_clean_end", "test_acc_end", "interp_step")


def table_row(row: dict[str, Any], field: str) -> dict[str, Any]:
  """A compact row of one cell: mean [lo, hi], and for each μ its null mean, excess, p."""
  out: dict[str, Any] = {"p": row.get(NOISE_FIELD), field: row.get(field),
                         "status": row["status"], "interpolates": row.get("interpolates")}
  for k in _TABLE_KEYS:
    base = f"{k}.value" if f"{k}.value.mean" in row else k
    out[k] = [row.get(f"{base}.{s}") for s in ("mean", "lo", "hi")]
    if f"{k}.null.mean" in row:
      out[f"{k}.null"] = row[f"{k}.null.mean"]
      out[f"{k}.excess"] = row.get(f"{k}.excess.mean")
      out[f"{k}.p_value"] = row.get(f"{k}.p_value")
  return out


def run(config: ml_collections.ConfigDict, workdir: str, *,
        dataset: Any = None) -> dict[str, Any]:
  """The whole map as one sweep; then summary.json (rows + table) and the figures."""
  config, start = common.begin(config, workdir, dataset, runs=engine_runs)  # checked, claimed
  grid = map_grid(config)
  rows = sweep.run_sweep(CELL, config, grid, workdir, vectorize=config.vectorize,
                         metric="mu_l_loss_from_peak.value", owner=NAME)
  root = epath.Path(workdir)
  field = next(iter(grid[0]))
  meta = io_lib.read_json(root / sweep.SUMMARY_FILE)  # the sweep's: fields, nested_points, ...
  summary = {
      **{k: v for k, v in meta.items() if k != "rows"}, "experiment": NAME,
      "task": config.task, "dataset": config.dataset.name, "model": config.model,
      "num_seeds": int(config.num_seeds), "num_steps": int(config.num_steps),
      "quick": bool(config.quick), "map_field": field, "map_values": list(config.map_values),
      "noise_rates": list(config.noise_rates),
      "target_train_acc": float(config.target_train_acc),
      "all_done": all(r["status"] == "done" for r in rows),
      "all_interpolate": all(bool(r.get("interpolates")) for r in rows),
      "table": [table_row(r, field) for r in rows], "rows": rows,
  }  # common.finish adds identity, command and wall_time_s (this call: a resume, its share)
  return common.finish(workdir, summary, make_figures, config=config, started=start)


# -------------------------------------------------------------------------------- figures
def plot_heatmap(values: np.ndarray, text: Sequence[Sequence[str]], row_labels: Sequence[str],
                 col_labels: Sequence[str], *, xlabel: str, ylabel: str, title: str,
                 hatched: np.ndarray | None = None, cmap: str = "viridis") -> Figure:
  """[R, C] values as coloured cells annotated with ``text``; ``hatched`` [R, C] cells are
  cross-hatched (here: not interpolating). NaN cells are left blank."""
  v = np.asarray(values, np.float64)
  r, c = v.shape
  fig = Figure(figsize=(1.3 * c + 1.9, 0.95 * r + 1.2), layout="constrained")
  ax = fig.subplots()
  im = ax.imshow(np.ma.masked_invalid(v), cmap=cmap, aspect="auto", origin="lower")
  lo, hi = (np.nanmin(v), np.nanmax(v)) if np.isfinite(v).any() else (0.0, 1.0)
  for i in range(r):
    for j in range(c):
      dark = np.isfinite(v[i, j]) and (v[i, j] - lo) < 0.45 * (hi - lo)
      ax.text(j, i, text[i][j], ha="center", va="center", fontsize=6.5,
              color="white" if dark else "black")
      if hatched is not None and hatched[i, j]:
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="xxx",
                               edgecolor="tab:red", linewidth=0))
  ax.set_xticks(range(c), list(col_labels), fontsize=8)
  ax.set_yticks(range(r), list(row_labels), fontsize=8)
  ax.set_xlabel(xlabel, fontsize=9)
  ax.set_ylabel(ylabel, fontsize=9)
  ax.set_title(title, fontsize=9)
  fig.colorbar(im, ax=ax, shrink=0.9).ax.tick_params(labelsize=7)
  return fig


def _same(a: Any, b: Any) -> bool:
  try:
    return bool(np.isclose(float(a), float(b)))
  except (TypeError, ValueError):
    return str(a) == str(b)


def _cells(summary: dict[str, Any]) -> tuple[list, list, dict[tuple[int, int], dict]]:
  """(map values, noise rates, {(row i, column j): sweep row})."""
  field, vs, ps = summary["map_field"], summary["map_values"], summary["noise_rates"]
  at = {}
  for row in summary["rows"]:
    i = next(k for k, v in enumerate(vs) if _same(v, row[field]))
    j = next(k for k, p in enumerate(ps) if _same(p, row[NOISE_FIELD]))
    at[i, j] = row
  return vs, ps, at


def _fmt(x: Any, f: str) -> str:
  return "–" if x is None or not np.isfinite(float(x)) else format(float(x), f)


def heatmaps(summary: dict[str, Any]) -> dict[str, Figure]:
  """One heatmap per measure of ``HEATMAPS``: {measure key: Figure}."""
  vs, ps, at = _cells(summary)
  shape, n = (len(vs), len(ps)), summary["num_seeds"]
  hatched = np.array([[not at.get((i, j), {}).get("interpolates", False)
                       for j in range(shape[1])] for i in range(shape[0])])
  figs = {}
  for key, title, null_key, f in HEATMAPS:
    values = np.full(shape, np.nan)
    text = [[""] * shape[1] for _ in range(shape[0])]
    for (i, j), row in at.items():
      if row["status"] != "done":
        text[i][j] = "failed"
        continue
      m, lo, hi = (row.get(f"{key}.{s}") for s in ("mean", "lo", "hi"))
      values[i, j] = np.nan if m is None else float(m)
      text[i][j] = f"{_fmt(m, f)}\n[{_fmt(lo, f)}, {_fmt(hi, f)}]"
      if null_key is not None:
        text[i][j] += f"\nnull {_fmt(row.get(f'{null_key}.mean'), f)}"
      if key == "interp_step" and row.get("interp_seeds", n) < n:
        text[i][j] += f"\n{row.get('interp_seeds')}/{n} seeds"
    figs[key] = plot_heatmap(
        values, text, [str(v) for v in vs], [f"{p:g}" for p in ps], hatched=hatched,
        xlabel="label noise p", ylabel=summary["map_field"],
        title=f"{title}\n(hatched: noisy-train acc < {summary['target_train_acc']:g} "
              f"at step {summary['num_steps']})")
  return figs


def curves_figure(workdir: epath.Path, summary: dict[str, Any]) -> Figure:
  """μ_Y(F_t;L) (with its null band), μ_Y(F_t;F_T0) and I(F_t;Y) of every cell."""
  vs, ps, at = _cells(summary)
  fig = Figure(figsize=(2.7 * len(ps), 2.1 * len(vs) + 0.3), layout="constrained")
  axes = fig.subplots(len(vs), len(ps), sharex=True, sharey=True, squeeze=False)
  top = 0.0
  for (i, j), row in at.items():
    ax = axes[len(vs) - 1 - i, j]  # rows bottom-up, as in the heatmaps
    ax.set_title(f"{summary['map_field'].split('.')[-1]}={vs[i]}, p={ps[j]:g}", fontsize=8)
    if row["status"] != "done":
      continue
    res = results.load(workdir / row["point"])
    st, m_l, m_0 = res.steps, res.measures("linear"), res.measures("f_t0")
    plotting.plot_band(ax, st, m_l["i_fy"], "I(F_t;Y)", color="black")
    plotting.plot_band(ax, st, m_l["mu"], "μ_Y(F_t;L)", color="tab:blue")
    if res.null("linear") is not None:
      plotting.plot_null_band(ax, st, res.null("linear"), color="tab:blue")
    plotting.plot_band(ax, st, m_0["mu"], "μ_Y(F_t;F_T0)", color="tab:orange")
    i_ly = float(np.nanmean(m_l["i_ly"][:, -1]))
    ax.axhline(i_ly, color="tab:blue", linestyle=":", linewidth=1, label="I(L;Y)")
    top = max(top, i_ly, float(np.nanmax(np.nanmean(m_l["i_fy"], axis=0))))
    step = row.get("interp_step.mean")
    if step is not None and np.isfinite(step):
      ax.axvline(step, color="tab:red", linestyle="--", linewidth=1, label="train acc ≥ target")
    ax.tick_params(labelsize=7)
    ax.grid(True, alpha=0.3, linewidth=0.5)
  axes[0, 0].set_ylim(-0.02, 1.15 * top if top > 0 else 1.0)  # shared: per-seed F_T0 bands
  axes[0, 0].legend(fontsize=6, frameon=False)                # can be wide with few T_0 seeds
  fig.supxlabel(plotting.STEP_LABEL, fontsize=9)
  fig.supylabel("information [bits]", fontsize=9)
  return fig


def make_figures(workdir: str) -> list[str]:
  """Redraws the map's figures (a map workdir) or one cell's curves (a cell workdir)."""
  root = epath.Path(workdir)
  summary = io_lib.read_json(root / sweep.SUMMARY_FILE)
  figures = root / "figures"
  if summary.get("cell"):
    res = results.load(root)
    m_l, m_0 = res.measures("linear"), res.measures("f_t0")
    p = summary["label_noise"]
    fig = plotting.plot_retention(
        res.steps, {p: {"I(F_t;Y)": m_l["i_fy"], "μ_Y(F_t;L)": m_l["mu"],
                        "μ_Y(F_t;F_T0)": m_0["mu"]}}, {p: res.arrays["train_acc"]},
        nulls=None if res.null("linear") is None else {p: res.null("linear")})
    return [plotting.save_figure(fig, figures / f"{NAME}_cell.png")]
  out = [plotting.save_figure(fig, figures / f"{NAME}_{key.replace('.', '_')}.png")
         for key, fig in heatmaps(summary).items()]
  out.append(plotting.save_figure(curves_figure(root, summary), figures / f"{NAME}_curves.png"))
  return [os.fspath(p) for p in out]


if __name__ == "__main__":
  cli.main(__file__, run)
