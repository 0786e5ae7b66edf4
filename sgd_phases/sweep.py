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

Nested vmap (``vectorize``): pending points whose F differs only in ``VECTORIZABLE`` fields
(learning rate and weight decay with a constant schedule, via ``optax.inject_hyperparams`` in
each seed's optimizer state; label-noise rate, via per-seed training labels) are trained as one
compiled program over a (point × seed) axis by ``train_f_nested`` on ``engine.run_seeds``;
each point's ``run(config, workdir, trained_f=...)`` hands its share to ``train_lib.train``,
which then trains only the references. Points with the same F share it. ``auto`` nests where the engine vmaps
seeds (``engine.resolve_strategy``; where ``benchmarks/sweep_bench.py`` measured it faster),
``on`` wherever possible, ``off`` never. A nested program that fails (e.g. one learning rate
diverges) is retried point by point, so each point still succeeds or fails on its own.
"""

from __future__ import annotations

import csv
import inspect
import io
import json
import logging
import os
import traceback
import zlib
from types import ModuleType
from typing import Any, Mapping, NamedTuple, Sequence

import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from etils import epath

from sgd_phases import engine, eval_lib, io_lib, plotting, sharding, steps, train_lib
from sgd_phases import workdir as workdir_lib
from sgd_phases import datasets as datasets_lib
from sgd_phases.grid import (apply_overrides, convert_value, format_value,  # noqa: F401
                             make_grid, point_name, resolve_field)

VECTORIZE = ("auto", "on", "off")
VECTORIZABLE = ("optimizer.learning_rate", "optimizer.weight_decay", "dataset.label_noise")
DEFAULT_METRICS = ("mu_over_i_at_t0", "mu_end", "test_acc_end", "max_abs_error_bits")
SUMMARY_FILE, CSV_FILE, FIGURE_FILE, ERROR_FILE = ("summary.json", "summary.csv", "sweep.png",
                                                   "error.txt")


# --------------------------------------------------------------------------- nested vmap
def _f_dict(config: ml_collections.ConfigDict) -> dict[str, Any] | None:
  """F's defining fields (``config_lib.F_FIELDS``) as a dict; None for a non-training config
  and for one recording surrogate test sets (``eval.surrogates``: never nested or shared)."""
  if "eval" in config and config.eval.get("surrogates"):
    return None
  try:
    return workdir_lib.identity(config, "f")
  except ValueError:  # its data or model cannot be pinned: not nested, the point fails alone
    return None


def f_key(config: ml_collections.ConfigDict) -> str | None:
  """Identity of F's training run (two configs with equal keys train the same F)."""
  d = _f_dict(config)
  return None if d is None else json.dumps(d, sort_keys=True)


def _group_key(config: ml_collections.ConfigDict) -> str | None:
  d = _f_dict(config)
  if d is None:
    return None
  for path in VECTORIZABLE:
    head, leaf = path.split(".")
    d[head] = {k: v for k, v in d[head].items() if k != leaf}
  return json.dumps([d, train_lib.needed_train_predictions(config)], sort_keys=True)


def nested_groups(configs: Sequence[ml_collections.ConfigDict]) -> list[list[int]]:
  """Indices of configs that one nested program can train (distinct F per group, in order).

  Configs with the same F (``f_key``) appear once; configs differing only in ``VECTORIZABLE``
  fields share a group, except that learning rate / weight decay may only differ under a
  constant schedule. Configs without the training fields are left out.
  """
  groups: dict[str, list[int]] = {}
  seen: set[str] = set()
  for i, c in enumerate(configs):
    key, g = f_key(c), _group_key(c)
    if key is None or key in seen:
      continue
    seen.add(key)
    varies_opt = False
    if g in groups:
      o0, o = configs[groups[g][0]].optimizer, c.optimizer
      varies_opt = (o0.learning_rate, o0.weight_decay) != (o.learning_rate, o.weight_decay)
    if varies_opt and c.optimizer.schedule != "constant":
      g = f"{g}#{i}"  # a schedule ties the learning rate into its shape: train apart
    groups.setdefault(g, []).append(i)
  return list(groups.values())


def auto_nests(config: ml_collections.ConfigDict, backend: str | None = None,
               ds: datasets_lib.Dataset | None = None) -> bool:
  """``vectorize=auto``: nest where the engine vmaps seeds (benchmarks/sweep_bench.py measured
  the nested program faster there); not where it maps them (convolutions, and dense models of
  ``engine.CPU_MAP_MIN_PARAMS`` or more parameters, on CPU). ``ds``: the dataset, to count
  the model's parameters (default: loaded from ``config.dataset``)."""
  ds = ds if ds is not None else datasets_lib.get_dataset(config.dataset)
  tr = engine.make_trainer(config.model, config.model_kwargs, config.optimizer, config.loss,
                              config.batch_size, 1, ds.num_classes)
  return engine.resolve_strategy(config.seed_strategy, config.model, backend,
                                    engine.num_params(tr, ds.x_train[0])) == "vmap"


def _nested_trainer(c0: ml_collections.ConfigDict, num_classes: int, num_steps: int,
                    hparams: Sequence[str]) -> steps.Trainer:
  """The engine's trainer, with ``hparams`` injected into the optimizer state."""
  tr = engine.make_trainer(c0.model, c0.model_kwargs, c0.optimizer, c0.loss, c0.batch_size,
                              num_steps, num_classes, c0.eval.batch_size)
  if not hparams:
    return tr
  o = c0.optimizer
  decay = "weight_decay" in hparams or o.weight_decay > 0

  def factory(learning_rate, weight_decay):
    if o.name == "adamw":
      return optax.adamw(learning_rate, weight_decay=weight_decay)
    tx = (optax.sgd(learning_rate, momentum=o.momentum or None, nesterov=bool(o.nesterov))
          if o.name == "sgd" else optax.adam(learning_rate))
    return optax.chain(optax.add_decayed_weights(weight_decay), tx) if decay else tx

  tx = optax.inject_hyperparams(factory)(learning_rate=o.learning_rate,
                                         weight_decay=o.weight_decay)
  return steps.Trainer(model=tr.model, tx=tx, loss=tr.loss, batch_size=tr.batch_size,
                       num_classes=tr.num_classes, has_batch_stats=tr.has_batch_stats,
                       eval_batch_size=tr.eval_batch_size)


def train_f_nested(configs: Sequence[ml_collections.ConfigDict],
                   ckpt_dir: epath.Path | None = None,
                   first_ds: datasets_lib.Dataset | None = None) -> list[dict[str, np.ndarray]]:
  """Trains F of every config as ONE program over a (config × seed) axis.

  Configs must differ only in ``VECTORIZABLE`` fields (``nested_groups``). Entry (p, i) uses
  seed i's keys, so each config's share equals what ``train_lib.train`` computes for it up to
  float rounding. Returns, per config, ``run_seeds``' outputs [num_seeds, ...] (numpy).
  ``first_ds``: ``configs[0]``'s dataset if already loaded (not read again).
  """
  c0 = configs[0]
  groups = nested_groups(configs)
  if len(groups) != 1 or len(groups[0]) != len(configs):
    raise ValueError("configs: differ in fields other than "
                     f"{VECTORIZABLE} (or repeat one F); cannot train them as one program")
  dss = [first_ds if i == 0 and first_ds is not None else datasets_lib.get_dataset(c.dataset)
         for i, c in enumerate(configs)]
  for c, ds in zip(configs[1:], dss[1:]):
    for a in ("x_train", "x_test", "y_test", "y_train_clean"):
      if not np.array_equal(getattr(ds, a), getattr(dss[0], a)):
        raise ValueError(f"configs: dataset {c.dataset.to_dict()} changes {a}, not only the "
                         "training labels; cannot train them as one program")
  probe = engine.probe_grid(c0.eval.probe_grid) if c0.eval.probe_grid else None
  data = engine.EvalData.create(dss[0], c0.eval.train_eval_size, probe)
  num_steps = train_lib.num_train_steps(c0, len(dss[0].y_train))
  eval_at = eval_lib.eval_steps(num_steps, c0.eval.schedule, c0.eval.num_points, c0.eval.every)
  s, p = int(c0.num_seeds), len(configs)
  per_point = {h: np.array([c.optimizer[h] for c in configs], np.float32)
               for h in ("learning_rate", "weight_decay")}
  hparams = [h for h, v in per_point.items() if np.unique(v).size > 1]
  tr = _nested_trainer(c0, dss[0].num_classes, num_steps, hparams)
  per_entry = {h: np.repeat(per_point[h], s) for h in hparams}

  def set_hparams(states: Any, rows: np.ndarray) -> Any:
    opt = states.opt_state
    hp = dict(opt.hyperparams, **{h: jnp.asarray(v[rows]) for h, v in per_entry.items()})
    return states.replace(opt_state=opt._replace(hyperparams=hp))

  strategy = engine.resolve_strategy(c0.seed_strategy, c0.model,
                                     num_params=engine.num_params(tr, dss[0].x_train[0]))
  out = engine.run_seeds(
      tr, data, np.repeat(np.stack([ds.y_train for ds in dss]), s, axis=0),
      engine.SeedSet(c0.seed, np.tile(np.arange(s), p)), eval_at,
      engine.RunOptions(strategy=strategy, seeds_per_chunk=c0.seeds_per_chunk,
                        ckpt_dir=ckpt_dir,
                        checkpoint_every=c0.checkpoint_every if ckpt_dir is not None else 0,
                        progress=c0.progress, desc=f"F x{p}",
                        train_predictions=train_lib.needed_train_predictions(c0),
                        probabilities=train_lib.probabilities_dtype(c0)),
      init_transform=set_hparams if hparams else None)
  out = {k: sharding.to_host(v) for k, v in out.items()}  # (gathered in a multi-process job)
  return [{k: v[i * s:(i + 1) * s] for k, v in out.items()} for i in range(p)]


class _Nested(NamedTuple):
  """One point's F from a nested program: its folder under ``_nested/``, which train-set
  predictions it recorded, and its outputs."""
  tag: str
  mode: str
  outputs: dict[str, np.ndarray]


def _nest(configs: list[ml_collections.ConfigDict], root: epath.Path, vectorize: str
          ) -> dict[str, _Nested]:
  """f_key -> its nested F for every group worth nesting."""
  found: dict[str, _Nested] = {}
  for group in nested_groups(configs):
    members = [configs[i] for i in group]
    shared = sum(f_key(c) == f_key(members[0]) for c in configs) > 1
    if not (len(group) > 1 or shared):
      continue
    first_ds = datasets_lib.get_dataset(members[0].dataset) if vectorize == "auto" else None
    if first_ds is not None and not auto_nests(members[0], ds=first_ds):
      continue
    tag = zlib.crc32("|".join(f_key(c) for c in members).encode())
    try:
      outs = train_f_nested(members, root / "_nested" / f"{tag:08x}", first_ds)
    except Exception:  # e.g. one learning rate diverges: let each point fail on its own
      logging.exception("nested training of %d points failed; training them one by one",
                        len(members))
      continue
    mode = train_lib.needed_train_predictions(members[0])
    found.update({f_key(c): _Nested(f"{tag:08x}", mode, o) for c, o in zip(members, outs)})
  return found


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


Shard = tuple[int, int]  # (index i, count n): this job runs the points with position ≡ i (mod n)


def parse_shard(spec: str | None, environ: Mapping[str, str] | None = None) -> Shard | None:
  """``"i/n"`` -> (i, n); without ``spec``, the shard a scheduler gives this task (a Slurm
  array's task, :func:`slurm_shard`; Cloud Batch's ``BATCH_TASK_INDEX``/``BATCH_TASK_COUNT``, a
  Kubernetes Indexed Job's ``JOB_COMPLETION_INDEX`` with the count in ``SWEEP_SHARD_COUNT``),
  or None (one job runs every point). One ValueError naming the flag."""
  env = os.environ if environ is None else environ
  if spec:
    i, sep, n = spec.partition("/")
    try:
      shard = (int(i), int(n)) if sep else None
    except ValueError:
      shard = None
    if shard is None or not 0 <= shard[0] < shard[1]:
      raise ValueError(f"shard={spec!r}: expected i/n with 0 <= i < n, e.g. 0/4")
    return shard
  if env.get("SLURM_ARRAY_TASK_ID") is not None and env.get("SLURM_ARRAY_TASK_COUNT") is not None:
    return slurm_shard(env)
  for idx, count in (("BATCH_TASK_INDEX", "BATCH_TASK_COUNT"),
                     ("JOB_COMPLETION_INDEX", "SWEEP_SHARD_COUNT")):
    if env.get(idx) is not None and env.get(count) is not None:
      return parse_shard(f"{env[idx]}/{env[count]}")
  if env.get("JOB_COMPLETION_INDEX") is not None:
    raise ValueError("shard: JOB_COMPLETION_INDEX is set (a Kubernetes Indexed Job) but the "
                     "number of shards is not: set SWEEP_SHARD_COUNT or pass --shard=i/n")
  return None


def slurm_shard(env: Mapping[str, str]) -> Shard:
  """The shard of a Slurm array task: the array's task ids (``--array=1-8``, ``0-15:4``, ...)
  in order map onto shards 0 .. n-1, from ``SLURM_ARRAY_TASK_ID``, ``_COUNT``, ``_MIN``,
  ``_MAX`` and ``_STEP`` (an array that does not start at 0 has ``_MIN`` > 0). An array whose
  ids are not evenly spaced (``--array=1,3,7``) is one ValueError: pass ``--shard=i/n``."""
  get = lambda k, default=None: int(env[k]) if env.get(k) is not None else default  # noqa: E731
  try:
    task, count = get("SLURM_ARRAY_TASK_ID"), get("SLURM_ARRAY_TASK_COUNT")
    lo, step = get("SLURM_ARRAY_TASK_MIN", 0), get("SLURM_ARRAY_TASK_STEP", 1)
    hi = get("SLURM_ARRAY_TASK_MAX", lo + (count - 1) * step)
  except ValueError:
    raise ValueError("shard: the SLURM_ARRAY_TASK_* variables are not integers: "
                     f"{ {k: v for k, v in env.items() if k.startswith('SLURM_ARRAY_TASK')} }"
                     ) from None
  index, off = divmod(task - lo, step) if step > 0 else (-1, 0)
  if off or not 0 <= index < count or hi != lo + (count - 1) * step:
    raise ValueError(f"shard: Slurm array task {task} of {count} (ids {lo}..{hi}, step {step}) "
                     "does not map onto shards 0..n-1: the array's ids are not evenly spaced; "
                     "pass --shard=i/n")
  return index, count


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
              shard: Shard | None = None) -> list[dict[str, Any]]:
  """Runs ``module.run`` at every grid point under ``workdir``; returns the summary rows.

  Writes ``summary.csv``, ``summary.json`` (rewritten after every point) and ``sweep.png``.
  With ``shard=(i, n)`` only the points at positions ≡ i (mod n) are run, and nothing but
  their folders is written (shards may run at once on one shared workdir): then
  :func:`merge_sweep` writes the summary once every shard is done; the rows returned are
  this shard's.
  """
  if vectorize not in VECTORIZE:
    raise ValueError(f"vectorize={vectorize!r} is not one of {VECTORIZE}")
  if "distributed" in config:  # a multi-process job: joined before its first computation
    train_lib.init_distributed(config)  # (the nested programs, or which process writes)
  root = io_lib.check_writable(workdir)
  points = _points(config, grid)
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
  nested = {} if vectorize == "off" else _nest(fresh, root, vectorize)

  def lookup(cfg: ml_collections.ConfigDict, mode: str) -> dict[str, np.ndarray] | None:
    hit = nested.get(f_key(cfg) or "")
    return hit.outputs if hit is not None and hit.mode == mode else None

  meta = _meta(module, grid, metric, vectorize, nested_points=len(nested))
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
  for tag in {n.tag for n in nested.values()} if io_lib.is_writer() else ():
    (root / "_nested" / tag).rmtree(missing_ok=True)  # this job's nested checkpoints only
  nest_dir = root / "_nested"
  if nested and io_lib.is_writer() and nest_dir.exists() and not any(
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
  _finish_summary(root, rows, meta)
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
