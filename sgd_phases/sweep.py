"""Hyperparameter × seed sweeps: a grid of config overrides, one experiment workdir per point.

    from experiments import linear_phase
    from sgd_phases import sweep
    config = linear_phase.get_config("quick")
    grid = sweep.make_grid(config, {"label_noise": [0.0, 0.2], "learning_rate": [0.01, 0.1]})
    rows = sweep.run_sweep(linear_phase, config, grid, "/tmp/sweep")  # one row per point
    # /tmp/sweep/{summary.csv, summary.json, sweep.png, <point>/{summary.json, ...}}

Grids (``make_grid``, ``resolve_field``, ``convert_value``, ``point_name``, ``apply_overrides``)
are built by :mod:`sgd_phases.grid`; they are re-exported here.

Points are the Cartesian product of the value lists, each run by the experiment's
``run(config, DIR/<point>)`` (the engine resumes from checkpoints); a point whose
``summary.json`` was written by the same config (its recorded ``identity``) is not rerun, one
from another config is run again (``sgd_phases.workdir``: never a stale row), and a failing
point writes ``DIR/<point>/error.txt``, is marked ``failed`` and does not stop the others.

Nested vmap (``vectorize``: auto | on | off): pending points whose F differs only in
learning rate, weight decay or label-noise rate are trained as one compiled program over a
(point × seed) axis, :mod:`sgd_phases.nested`. Many jobs sharing one workdir run one shard
each (``shard``, :mod:`sgd_phases.shards`), then :func:`merge_sweep` writes the summary. The
names of both modules that users call are re-exported here.
"""

from __future__ import annotations

import csv
import inspect
import io
import logging
import os
import traceback
from types import ModuleType
from typing import Any, Callable, Mapping, Sequence

import ml_collections
import numpy as np
from etils import epath

from sgd_phases import io_lib, nested, plotting, train_lib
from sgd_phases import workdir as workdir_lib
from sgd_phases.grid import (apply_overrides, convert_value, format_value,  # noqa: F401
                             make_grid, point_name, resolve_field)
from sgd_phases.nested import (VECTORIZABLE, auto_nests, f_key, nested_groups,  # noqa: F401
                               train_f_nested)
from sgd_phases.shards import Shard, parse_shard, slurm_shard  # noqa: F401

VECTORIZE = ("auto", "on", "off")
DEFAULT_METRICS = ("mu_over_i_at_t0", "mu_end", "test_acc_end", "max_abs_error_bits")
SUMMARY_FILE, CSV_FILE, FIGURE_FILE, ERROR_FILE = ("summary.json", "summary.csv", "sweep.png",
                                                   "error.txt")


# ---------------------------------------------------------------------------- the driver
_NOT_COLUMNS = ("identity", "command")  # what produced a summary: not a headline column


def flatten_summary(summary: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  """Scalars of an experiment summary; each stats.summarize dict -> ``<key>.{mean,lo,hi}``."""
  out: dict[str, Any] = {}
  for k, v in summary.items():
    if not prefix and k in _NOT_COLUMNS:
      continue
    key = f"{prefix}{k}"
    if isinstance(v, Mapping) and "mean" in v:
      out.update({f"{key}.{s}": v.get(s) for s in ("mean", "lo", "hi")})
    elif isinstance(v, Mapping):
      out.update(flatten_summary(v, key + "."))
    elif isinstance(v, (bool, int, float, str)) or v is None:
      out[key] = v
  return out


def _row(overrides: Mapping[str, Any], name: str, status: str,
         extra: Mapping[str, Any]) -> dict[str, Any]:
  """One summary row; headline names that clash with the row's own get a ``summary.`` prefix."""
  row = {**overrides, "point": name, "status": status}
  for k, v in extra.items():
    row[f"summary.{k}" if k in row else k] = v
  return row


def _points(config: ml_collections.ConfigDict, grid: Sequence[Mapping[str, Any]]
            ) -> list[tuple[str, dict[str, Any], ml_collections.ConfigDict]]:
  points = [(point_name(o), dict(o), apply_overrides(config, o)) for o in grid]
  names = [p[0] for p in points]
  if len(set(names)) != len(names):
    raise ValueError(f"grid: two points share a folder name: {names}")
  return points


def _finished_row(root: epath.Path, name: str, o: Mapping[str, Any],
                  cfg: ml_collections.ConfigDict) -> dict[str, Any] | None:
  """The row of a point whose summary.json this config wrote, else None (logged when the
  summary came from another config)."""
  # reused only when it came from this point's config (sgd_phases.workdir); otherwise the
  # point is run again: re-summarised from its finished run, re-scored, or -- where the
  # trained networks would differ -- refused by the engine naming the fields (unless
  # overwrite), never returned stale
  try:  # the point's config pinned (workdir.identity), as its run recorded it
    changed = workdir_lib.summary_differences(root / name / SUMMARY_FILE, cfg)
  except ValueError as e:  # its data or model cannot be pinned now: run it (it fails alone)
    logging.warning("sweep point %s: %s", name, e)
    return None
  if changed == []:
    return _row(o, name, "done", flatten_summary(io_lib.read_json(root / name / SUMMARY_FILE)))
  if changed:
    logging.warning("sweep point %s: its summary.json came from another config (%s)", name,
                    "; ".join(changed[:5]))
  return None


def run_sweep(module: ModuleType, config: ml_collections.ConfigDict,
              grid: Sequence[Mapping[str, Any]], workdir: io_lib.PathLike, *,
              vectorize: str = "auto", metric: str | None = None,
              shard: Shard | None = None, owner: str | None = None,
              check: Callable[[ml_collections.ConfigDict], None] | None = None
              ) -> list[dict[str, Any]]:
  """Runs ``module.run`` at every grid point under ``workdir``; returns the summary rows.

  Writes ``summary.csv``, ``summary.json`` (rewritten after every point) and ``sweep.png``.
  With ``shard=(i, n)`` only the points at positions ≡ i (mod n) are run, and nothing but
  their folders is written (shards may run at once on one shared workdir): then
  :func:`merge_sweep` writes the summary once every shard is done; the rows returned are
  this shard's. ``workdir`` is the sweep's own (``workdir.claim``; ``owner``: the command
  that owns it, default ``sweep:<module>``): one holding another command's run is refused.
  ``check(config)``: every point's config is checked before anything is written (one
  ValueError naming the point and the field), so that a bad value is refused, not run as a
  failing point.
  """
  if vectorize not in VECTORIZE:
    raise ValueError(f"vectorize={vectorize!r} is not one of {VECTORIZE}")
  if "distributed" in config:  # a multi-process job: joined before its first computation
    train_lib.init_distributed(config)  # (the nested programs, or which process writes)
  points = _points(config, grid)
  for name, _, cfg in points if check is not None else ():
    try:
      check(cfg)
    except ValueError as e:
      raise ValueError(f"sweep point {name}: {e}") from e
  root = workdir_lib.claim(workdir, owner or f"sweep:{module.__name__}")
  names = [p[0] for p in points]
  if shard is not None:
    points = [p for k, p in enumerate(points) if k % shard[1] == shard[0]]
    names = [p[0] for p in points]
    logging.info("sweep shard %d/%d: %d of %d points", shard[0], shard[1], len(points),
                 len(grid))
  rows: dict[str, dict[str, Any]] = {}
  pending = []
  for name, o, cfg in points:
    row = _finished_row(root, name, o, cfg)
    if row is not None:
      logging.info("sweep point %s is finished; skipped", name)
      rows[name] = row
    else:
      pending.append((name, o, cfg))
  fresh = [cfg for name, _, cfg in pending
           if not (root / name / io_lib.RESULTS_FILE).exists()]
  found = {} if vectorize == "off" else nested.nest(fresh, root, vectorize)

  def lookup(cfg: ml_collections.ConfigDict, mode: str) -> dict[str, np.ndarray] | None:
    hit = found.get(f_key(cfg) or "")
    return hit.outputs if hit is not None and hit.mode == mode else None

  meta = _meta(module, grid, metric, vectorize, nested_points=len(found))
  takes_f = "trained_f" in inspect.signature(module.run).parameters
  for name, o, cfg in pending:
    pdir = root / name
    try:
      module.run(cfg, os.fspath(pdir), **({"trained_f": lookup} if takes_f else {}))
      summary = io_lib.read_json(pdir / SUMMARY_FILE)
      if io_lib.is_writer():
        (pdir / ERROR_FILE).unlink(missing_ok=True)
      rows[name] = _row(o, name, "done", flatten_summary(summary))
    except Exception as e:  # reported, and the other points go on
      logging.exception("sweep point %s failed", name)
      if io_lib.is_writer():
        (pdir / SUMMARY_FILE).unlink(missing_ok=True)  # written before the failure: retry it
      io_lib.write_bytes(pdir / ERROR_FILE, traceback.format_exc().encode())
      rows[name] = _row(o, name, "failed", {"error": f"{type(e).__name__}: {e}"[:300]})
    if shard is None:
      write_summary(root, [rows[n] for n in names if n in rows], meta)
  for tag in {n.tag for n in found.values()} if io_lib.is_writer() else ():
    (root / "_nested" / tag).rmtree(missing_ok=True)  # this job's nested checkpoints only
  nest_dir = root / "_nested"
  if found and io_lib.is_writer() and nest_dir.exists() and not any(
      True for _ in nest_dir.iterdir()):
    nest_dir.rmdir()
  ordered = [rows[n] for n in names]
  if shard is None:
    _finish_summary(root, ordered, meta)
  return ordered


def merge_sweep(module: ModuleType, config: ml_collections.ConfigDict,
                grid: Sequence[Mapping[str, Any]], workdir: io_lib.PathLike, *,
                vectorize: str = "auto", metric: str | None = None) -> list[dict[str, Any]]:
  """The summary of a sweep run as shards (``run_sweep(..., shard=...)``): one row per point in
  grid order, ``done`` where the point's summary.json came from its config, ``failed`` (with
  the error) where the point wrote error.txt, ``missing`` otherwise (not run yet, still
  running, or from another config). Writes ``summary.csv``/``summary.json`` and ``sweep.png``
  like a one-job sweep, with ``missing``/``failed`` lists; runs nothing."""
  root = io_lib.path(workdir, "workdir")
  workdir_lib.check_owner(root, f"sweep:{module.__name__}")
  rows = []
  for name, o, cfg in _points(config, grid):
    row = _finished_row(root, name, o, cfg)
    if row is None and (root / name / ERROR_FILE).exists():
      err = (root / name / ERROR_FILE).read_text().strip().splitlines()
      row = _row(o, name, "failed", {"error": (err[-1] if err else "")[:300]})
    rows.append(row if row is not None else _row(o, name, "missing", {}))
  meta = _meta(module, grid, metric, vectorize, nested_points=0, merged=True,
               missing=[r["point"] for r in rows if r["status"] == "missing"],
               failed=[r["point"] for r in rows if r["status"] == "failed"])
  _finish_summary(workdir_lib.claim(root, f"sweep:{module.__name__}"), rows, meta)
  if meta["missing"] or meta["failed"]:
    logging.warning("sweep %s: %d missing, %d failed of %d points", os.fspath(root),
                    len(meta["missing"]), len(meta["failed"]), len(rows))
  return rows


def _meta(module: ModuleType, grid: Sequence[Mapping[str, Any]], metric: str | None,
          vectorize: str, **extra: Any) -> dict[str, Any]:
  """The fields of a sweep's summary.json beside its rows."""
  return dict(experiment="sweep", module=module.__name__, fields=list(grid[0]) if grid else [],
              metric=metric, vectorize=vectorize, **extra)


def _finish_summary(root: epath.Path, rows: list[dict[str, Any]], meta: Mapping[str, Any]
                    ) -> None:
  write_summary(root, rows, meta)
  try:  # the table is written: a plotting problem must not lose the sweep
    make_figure(root)
  except Exception:
    logging.exception("%s: could not draw %s", root, FIGURE_FILE)


def write_summary(root: epath.Path, rows: Sequence[Mapping[str, Any]], meta: Mapping[str, Any]
                  ) -> None:
  """``summary.json`` ({**meta, rows}) and ``summary.csv`` (one row per point), atomically."""
  io_lib.write_json(root / SUMMARY_FILE, {**meta, "rows": list(rows)})
  columns = list(dict.fromkeys(k for r in rows for k in r))
  buf = io.StringIO()
  writer = csv.DictWriter(buf, fieldnames=columns, restval="", lineterminator="\n")
  writer.writeheader()
  writer.writerows(rows)
  io_lib.write_bytes(root / CSV_FILE, buf.getvalue().encode())
  io_lib.barrier("sweep summary written")  # e.g. retention_map reads it next, on every process


def pick_metric(rows: Sequence[Mapping[str, Any]], fields: Sequence[str]) -> str | None:
  """The headline plotted by default: μ/I at T_0 (or ``DEFAULT_METRICS``) where some point has
  a finite value, else the first ``<name>.mean`` (or numeric) column with one."""
  finite = list(dict.fromkeys(
      k for r in rows for k, v in r.items() if k not in fields and not isinstance(v, bool)
      and isinstance(v, (int, float)) and np.isfinite(v)))
  for m in DEFAULT_METRICS:
    if f"{m}.mean" in finite or m in finite:
      return m
  means = [k[:-5] for k in finite if k.endswith(".mean")]
  return means[0] if means else (finite[0] if finite else None)


def sweep_figure(rows: Sequence[Mapping[str, Any]], fields: Sequence[str], metric: str
                 ) -> plotting.Figure:
  """``metric`` (mean with CI) against the first swept field, one line per other combination.

  Lists (e.g. from a sweep file) are shown as their text, on categorical positions."""
  key = lambda v: format_value(v) if isinstance(v, (list, tuple, dict)) else v
  xf, others = fields[0], list(fields[1:])
  xs = list(dict.fromkeys(key(r[xf]) for r in rows))
  combo_of = lambda r: tuple(key(r[f]) for f in others)
  combos = list(dict.fromkeys(combo_of(r) for r in rows))

  def curve(combo: tuple) -> list[np.ndarray]:
    by_x = {key(r[xf]): r for r in rows if combo_of(r) == combo}
    get = lambda r, s: r.get(f"{metric}.{s}", r.get(metric) if s == "mean" else None)
    return [np.array([np.nan if (r := by_x.get(x)) is None or get(r, s) is None
                      else float(get(r, s)) for x in xs]) for s in ("mean", "lo", "hi")]

  try:
    xpos = np.asarray(xs, np.float64)
    logx = bool(np.all(xpos > 0) and xpos.max() >= 10 * xpos.min())
  except (TypeError, ValueError):
    xpos, logx = np.arange(len(xs), dtype=np.float64), False
  fig = plotting.plot_sweep(xs, *curve(combos[0]), xlabel=xf, ylabel=metric, logx=logx)
  if others:
    ax = fig.axes[0]
    label = lambda combo: ", ".join(f"{f}={format_value(v)}" for f, v in zip(others, combo))
    ax.containers[0].set_label(label(combos[0]))
    for k, combo in enumerate(combos[1:], start=1):
      m, lo, hi = curve(combo)
      yerr = np.stack([np.where(np.isfinite(lo), m - lo, 0), np.where(np.isfinite(hi), hi - m, 0)])
      ax.errorbar(xpos, m, yerr=yerr, marker="o", markersize=4, capsize=3,
                  color=f"C{(k - 1) % 10}", label=label(combo))
    ax.legend(fontsize=7, frameon=False)
  return fig


def make_figure(workdir: io_lib.PathLike) -> str | None:
  """Redraws ``sweep.png`` from the sweep's ``summary.json``; None when nothing to plot."""
  root = io_lib.path(workdir)
  s = io_lib.read_json(root / SUMMARY_FILE)
  rows, fields = s.get("rows", []), s.get("fields", [])
  metric = s.get("metric") or pick_metric(rows, fields)
  if not rows or not fields or metric is None:
    logging.warning("%s: no numeric headline to plot; no %s", root, FIGURE_FILE)
    return None
  return plotting.save_figure(sweep_figure(rows, fields, metric), root / FIGURE_FILE)
