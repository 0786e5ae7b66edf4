"""The training engine: many seeds in one compiled program, every evaluation scored on device.

    from sgd_phases import config_lib, train_lib
    config = config_lib.base_config("ball2d_sinusoid", "mlp")
    config.references.linear = config_lib.reference_config("linear")
    results = train_lib.train(config, "/tmp/run")      # writes results.npz, config.json, ...
    results.measures("linear")["mu"]                   # [seeds, evals] μ_Y(F_t; L) in bits

Flow of ``train``: validate the config, then train F seed-chunk by seed-chunk (one jitted
program per chunk: ``fori_loop`` over SGD steps between evaluations, vmapped or mapped over
seeds; predictions of every evaluation kept in a device buffer; an Orbax checkpoint every few
evaluations), train the reference classifiers with the same code, compute T_0 and every
information measure for the whole [seeds, evals] block on device, and write the results
atomically. Seed i always uses ``fold_in(key(config.seed), i)``: the same run whatever
``num_seeds`` or chunk it is in.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import logging
import time
import zlib
from pathlib import Path
from typing import Any, Mapping

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from sgd_phases import (checkpointing, config_lib, eval_lib, io_lib, optim, scoring, sharding,
                        steps, stats)
from sgd_phases import datasets as datasets_lib
from sgd_phases import models as models_lib
from sgd_phases import mutual_info

BUFFER_KEYS = ("test_acc", "test_loss", "train_acc", "train_loss", "train_acc_clean")
_F_LOOKUP: contextvars.ContextVar[Any] = contextvars.ContextVar("f_lookup", default=None)


@contextlib.contextmanager
def precomputed_f(lookup: Any):
  """Within the block, ``train`` asks ``lookup(config, train_predictions)`` for F's outputs
  (dict as ``run_seeds`` returns, or None: train F as usual); ``sgd_phases.sweep`` uses it to
  hand each grid point its share of one nested hyperparameter × seed program."""
  token = _F_LOOKUP.set(lookup)
  try:
    yield
  finally:
    _F_LOOKUP.reset(token)


@dataclasses.dataclass(frozen=True)
class Results:
  """What a run produced: the arrays of ``results.npz`` (see README: results format)."""
  arrays: dict[str, np.ndarray]
  workdir: Path | None = None

  @property
  def steps(self) -> np.ndarray:
    return self.arrays["steps"]

  @property
  def reference_names(self) -> list[str]:
    return [str(r) for r in self.arrays["reference_names"]]

  def measures(self, reference: str) -> dict[str, np.ndarray]:
    """InfoMeasures fields -> [seeds, evals] arrays against one reference."""
    if reference not in self.reference_names:
      raise ValueError(f"reference={reference!r} not in {self.reference_names}")
    return {f: self.arrays[f"mi/{reference}/{f}"] for f in mutual_info.InfoMeasures._fields}

  def null(self, reference: str) -> np.ndarray | None:
    """[P, S, E] draws of μ_Y(F_t;L) under F ⟂ L | Y for one reference, or None when the run
    has none (``config.null.num_permutations = 0``; ``analysis.add_null`` adds them)."""
    self.measures(reference)  # validates the name
    return self.arrays.get(f"null/{reference}/mu")


# Dense models with at least this many parameters per seed are mapped over seeds on CPU.
CPU_MAP_MIN_PARAMS = 100_000


def resolve_strategy(strategy: str, model: str, backend: str | None = None,
                     num_params: int | None = None) -> str:
  """``auto`` -> "vmap" or "map" for this backend (measured: benchmarks/train_throughput.py).

  CPU: "map" for convolutional models (vmap turns convolutions into grouped ones) and for
  dense models with at least ``CPU_MAP_MIN_PARAMS`` parameters per seed when ``num_params`` is
  given (the MNIST MLP, 670k: the stacked parameters and gradients of 16 seeds overflow the
  caches, while lax.map keeps one seed's working set hot); "vmap" for small dense models, where
  batching the tiny per-seed matmuls wins. GPU/TPU: "vmap" (untested: no accelerator was
  available for the benchmarks). Seed-steps/s at 16 seeds on 2 idle CPU cores
  (benchmarks/results/train_throughput*_cpu.json): MNIST MLP 784-512-512-2 map 635 vs vmap 561;
  paper_cnn (patches) map 34.7 vs vmap 29.2; cnn4 map 39.8 vs vmap 35.7. Loaded (load ~8):
  50-d MLP 64x2 vmap 7,110 vs map 6,100.
  """
  if strategy != "auto":
    return strategy
  backend = backend or jax.default_backend()
  if backend != "cpu":
    return "vmap"
  if model not in ("linear", "mlp"):
    return "map"
  return "map" if num_params is not None and num_params >= CPU_MAP_MIN_PARAMS else "vmap"


def num_params(tr: steps.Trainer, x_example: Any) -> int:
  """Parameters of one seed of ``tr.model`` on inputs shaped like ``x_example`` (no compute)."""
  shapes = jax.eval_shape(tr.model.init, jax.random.key(0), jnp.zeros((1,) + x_example.shape,
                                                                      jnp.float32))
  return models_lib.count_params(shapes["params"])


def config_strategy(config: ml_collections.ConfigDict, model: str, tr: steps.Trainer,
                    x_example: Any) -> str:
  """``config.seed_strategy`` resolved for ``model`` (trained by ``tr`` on inputs shaped like
  ``x_example``) on this backend."""
  return resolve_strategy(config.seed_strategy, model, num_params=num_params(tr, x_example))


def make_trainer(model: str, model_kwargs: Mapping[str, Any], optimizer: Any, loss: str,
                 batch_size: int, num_steps: int, num_classes: int,
                 eval_batch_size: int = 2000, unroll: bool = False) -> steps.Trainer:
  """The static description of what ``run_seeds`` trains. ``unroll``: for the "unroll" seed
  strategy (no loops in the programs), where convolutions default to XLA's native ones."""
  kwargs = dict(model_kwargs)
  if unroll and "conv_impl" in models_lib.model_kwargs(model):
    if kwargs.get("conv_impl", "auto") == "auto":
      kwargs["conv_impl"] = "lax"
  module = models_lib.get_model(model, num_classes, **kwargs)
  return steps.Trainer(model=module, tx=optim.make_optimizer(optimizer, num_steps), loss=loss,
                       batch_size=batch_size, num_classes=num_classes,
                       has_batch_stats=models_lib.has_batch_stats(module),
                       eval_batch_size=eval_batch_size, unroll=unroll)


def _trainer(config: ml_collections.ConfigDict, model: str, model_kwargs: Any, optimizer: Any,
             loss: str, batch_size: int, num_steps: int, ds: datasets_lib.Dataset
             ) -> tuple[steps.Trainer, str]:
  """(trainer, resolved seed strategy) of one network of a run (F or a reference)."""
  args = (model, model_kwargs, optimizer, loss, batch_size, num_steps, ds.num_classes,
          config.eval.batch_size)
  tr = make_trainer(*args)
  strategy = config_strategy(config, model, tr, ds.x_train[0])
  return (make_trainer(*args, unroll=True) if strategy == "unroll" else tr), strategy


def seed_keys(seed: int, seed_ids: np.ndarray, salt: str = "") -> tuple[jax.Array, jax.Array]:
  """(init keys, data keys) [S] for these seed indices; ``salt`` separates references."""
  base = jax.random.key(seed)
  if salt:
    base = jax.random.fold_in(base, zlib.crc32(salt.encode()) & 0x7FFFFFFF)
  keys = jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.asarray(seed_ids, jnp.uint32))
  split = jax.vmap(jax.random.split)(keys)
  return split[:, 0], split[:, 1]


@flax.struct.dataclass
class _Data:
  """Device copies of the arrays the programs read (replicated on every device)."""
  x_train: jax.Array
  x_test: jax.Array
  y_test: jax.Array
  x_tr: jax.Array
  y_tr_clean: jax.Array
  x_probe: jax.Array | None = None

  @classmethod
  def create(cls, ds: datasets_lib.Dataset, train_eval_size: int,
             x_probe: np.ndarray | None = None) -> "_Data":
    m = min(train_eval_size, len(ds.y_train))
    return cls(jnp.asarray(ds.x_train), jnp.asarray(ds.x_test), jnp.asarray(ds.y_test),
               jnp.asarray(ds.x_train[:m]), jnp.asarray(ds.y_train_clean[:m]),
               None if x_probe is None else jnp.asarray(x_probe, jnp.float32))


def probe_grid(size: int, extent: float = 1.1) -> np.ndarray:
  """[size², 2] grid over [−extent, extent]² (row-major: x1 varies fastest)."""
  g = np.linspace(-extent, extent, size, dtype=np.float32)
  x1, x2 = np.meshgrid(g, g)
  return np.stack([x1.ravel(), x2.ravel()], axis=1)


def run_seeds(tr: steps.Trainer, data: _Data, labels: np.ndarray, seed: int,
              seed_ids: np.ndarray, eval_at: np.ndarray, *, strategy: str,
              seeds_per_chunk: int = 0, salt: str = "", ckpt_dir: Path | None = None,
              checkpoint_every: int = 0, progress: bool = False, desc: str = "train",
              writer: io_lib.MetricWriter | None = None,
              train_predictions: str = "none",
              init_transform: Any = None) -> dict[str, jax.Array]:
  """Trains seeds ``seed_ids`` chunk by chunk; returns device arrays [S, E, ...].

  With several devices each chunk's seeds are sharded over them (``sgd_phases.sharding``;
  chunks are padded to a multiple of the device count and the padding dropped) and the
  returned arrays stay sharded.

  ``labels``: [n] shared or [S, n] per-seed training labels. ``eval_at``: steps at which to
  record predictions and metrics (the last one is the end of training). ``init_transform``:
  optional ``(states, rows) -> states`` applied to a chunk's fresh states (``rows``: positions
  in ``seed_ids``), e.g. per-seed hyperparameters of ``sgd_phases.sweep``'s nested runs.
  """
  mesh = sharding.seed_mesh()
  data = sharding.put_replicated(data, mesh)
  chunk = seeds_per_chunk or len(seed_ids)
  outs = []
  for c, lo in enumerate(range(0, len(seed_ids), chunk)):
    ids = seed_ids[lo:lo + chunk]
    lab = labels if labels.ndim == 1 else labels[lo:lo + chunk]
    padded = sharding.pad_seed_ids(ids, mesh)
    if labels.ndim == 2 and len(padded) > len(ids):
      lab = np.concatenate([lab, np.repeat(lab[-1:], len(padded) - len(ids), 0)])
    sub = None if ckpt_dir is None else ckpt_dir / f"chunk_{c:03d}_seeds_{ids[0]}-{ids[-1]}"
    out = _run_chunk(tr, data, lab, seed, padded, eval_at, strategy=strategy, salt=salt,
                     ckpt_dir=sub, checkpoint_every=checkpoint_every, progress=progress,
                     desc=f"{desc} seeds {ids[0]}-{ids[-1]}", writer=writer,
                     train_predictions=train_predictions, mesh=mesh,
                     init_transform=None if init_transform is None else functools.partial(
                         init_transform, rows=np.resize(np.arange(lo, lo + len(ids)),
                                                        len(padded))))
    outs.append({k: v[:len(ids)] if len(padded) > len(ids) else v for k, v in out.items()})
  if len(outs) == 1:
    return outs[0]
  return {k: jnp.concatenate([o[k] for o in outs]) for k in outs[0]}


def _compile(fn, *args, what: str):
  t = time.perf_counter()
  compiled = fn.lower(*args).compile()
  logging.info("compiled %s in %.1f s", what, time.perf_counter() - t)
  return compiled


@dataclasses.dataclass(frozen=True)
class _StepLoop:
  """The SGD segment of the "unroll" strategy: steps driven from Python, one call of a jitted
  all-seeds step program each (same signature and results as the ``fori_loop`` segment)."""
  step: Any
  check: Any  # (states, bad, last step) -> bad: steps.mark_nonfinite over seeds

  def __call__(self, states, perm, data_keys, labels, x_train, start, stop):
    bad = jnp.full((perm.shape[0],), -1, jnp.int32)
    for t in range(int(start), int(stop)):
      states, perm, bad = self.step(states, perm, bad, data_keys, labels, x_train, jnp.int32(t))
    return states, self.check(states, bad, jnp.int32(int(stop) - 1)), perm


@functools.lru_cache(maxsize=8)
def _programs(tr: steps.Trainer, strategy: str, mesh: Any, extra: tuple[str, ...]
              ) -> tuple[Any, Any, Any, Any]:
  """(init, segment, record, predict) jitted once per trainer: every chunk and call reuses them.

  jit caches compiled executables per function object and input shapes, so building fresh
  closures per chunk would recompile; data enter as arguments, never as closed-over arrays
  (which XLA would embed in the program as constants: slow to compile, a copy in memory).
  """
  init = jax.jit(steps.over_seeds(functools.partial(steps.create_state, tr), "vmap", 1))

  def one_segment(state, perm, data_key, labels, x_train, start, stop):
    return steps.run_segment(tr, state, data_key, labels, x_train, start, stop, perm=perm)

  if strategy == "unroll":
    def one_step(state, perm, bad, data_key, labels, x_train, t):
      return steps.segment_step(tr, t, (state, perm, bad), data_key, labels, x_train)

    segment = _StepLoop(
        jax.jit(sharding.shard_seeds(steps.over_seeds(one_step, strategy, 5), mesh, 5, 2),
                donate_argnums=(0, 1, 2)),
        jax.jit(sharding.shard_seeds(steps.over_seeds(steps.mark_nonfinite, "vmap", 2), mesh,
                                     2, 1)))
  else:
    segment = jax.jit(sharding.shard_seeds(steps.over_seeds(one_segment, strategy, 4), mesh, 4,
                                           3), donate_argnums=(0, 1))
  one_eval = lambda st, y_tr, *shared: steps.evaluate(tr, st, y_tr, *shared[:4],
                                                      **dict(zip(extra, shared[4:])))
  evaluate = sharding.shard_seeds(steps.over_seeds(one_eval, strategy, 2), mesh, 2,
                                  4 + len(extra))

  @functools.partial(jax.jit, donate_argnums=1)
  def record(states, buffers, k, labels_tr, *shared):
    ev = evaluate(states, labels_tr, *shared)
    return {name: buf.at[:, k].set(ev[name]) for name, buf in buffers.items()}

  predict = jax.jit(sharding.shard_seeds(
      steps.over_seeds(functools.partial(steps.predict, tr), strategy, 1), mesh, 1, 1))
  return init, segment, record, predict


def _first_perm(data_keys: jax.Array, start: int, n: int, batch_size: int, mesh: Any
                ) -> jax.Array:
  """[S, n] example order current before step ``start`` (unused zeros at an epoch start)."""
  per_epoch = max(n // batch_size, 1)
  if start % per_epoch == 0:
    return sharding.put_seeded(jnp.zeros((data_keys.shape[0], n), jnp.int32), mesh)
  perms = jax.jit(jax.vmap(steps.epoch_permutation, in_axes=(0, None, None)),
                  static_argnums=2)(data_keys, jnp.int32(start // per_epoch), n)
  return sharding.put_seeded(perms, mesh)


def _run_chunk(tr, data, labels, seed, ids, eval_at, *, strategy, salt, ckpt_dir,
               checkpoint_every, progress, desc, writer, train_predictions, mesh,
               init_transform=None) -> dict[str, jax.Array]:
  s, e, n_test = len(ids), len(eval_at), data.y_test.shape[0]
  init_keys, data_keys = seed_keys(seed, ids, salt)
  labels_sn = jnp.broadcast_to(jnp.asarray(labels, jnp.int32), (s, data.x_train.shape[0]))
  labels_sn = sharding.put_seeded(labels_sn, mesh)
  init_keys, data_keys = sharding.put_seeded((init_keys, data_keys), mesh)
  extra = {"x_train_full": data.x_train if train_predictions == "all" else None,
           "x_probe": data.x_probe}
  extra = {k: v for k, v in extra.items() if v is not None}
  init, segment, record, predict = _programs(tr, strategy, mesh, tuple(extra))
  states = init(init_keys, data.x_train[0])
  states = sharding.put_seeded(states if init_transform is None else init_transform(states), mesh)
  buffers = {k: jnp.zeros((s, e), jnp.float32) for k in BUFFER_KEYS}
  pdtype = eval_lib.prediction_dtype(tr.num_classes)
  buffers["predictions"] = jnp.zeros((s, e, n_test), pdtype)
  n_train, m = data.x_train.shape[0], data.x_tr.shape[0]
  if train_predictions == "all":
    buffers["train_predictions"] = jnp.zeros((s, e, n_train), pdtype)
  if data.x_probe is not None:
    buffers["probe_predictions"] = jnp.zeros((s, e, data.x_probe.shape[0]), pdtype)

  buffers = sharding.put_seeded(buffers, mesh)
  shared = (labels_sn[:, :m], data.x_test, data.y_test, data.x_tr, data.y_tr_clean,
            *extra.values())

  ckpt, k0 = None, 0
  if ckpt_dir is not None and checkpoint_every:
    ckpt = checkpointing.ChunkCheckpointer(ckpt_dir)
    latest = ckpt.latest()
    if latest is not None:
      states, buffers, _ = ckpt.restore(latest, states, buffers)
      k0 = latest + 1
      logging.info("%s: resumed from checkpoint at step %d", desc, int(eval_at[latest]))
  i32 = lambda v: jnp.asarray(v, jnp.int32)
  perm = _first_perm(data_keys, int(eval_at[k0 - 1]) if k0 else 0, n_train, tr.batch_size, mesh)
  args = (states, perm, data_keys, labels_sn, data.x_train, i32(0), i32(0))
  if not isinstance(segment, _StepLoop):  # (its step program compiles at the first step)
    segment = _compile(segment, *args, what=f"{desc} SGD segment")
  record = _compile(record, states, buffers, i32(0), *shared, what=f"{desc} evaluation")
  bar = _progress_bar(progress, int(eval_at[-1]), int(eval_at[k0 - 1]) if k0 else 0, desc)
  bad = jnp.full((s,), -1, jnp.int32)
  pending = None
  try:
    for k in range(k0, e):
      if k > 0:
        states, bad_k, perm = segment(states, perm, data_keys, labels_sn, data.x_train,
                                      i32(eval_at[k - 1]), i32(eval_at[k]))
        bad = jnp.where(bad < 0, bad_k, bad)
      buffers = record(states, buffers, i32(k), *shared)
      if pending is not None:  # host reads one evaluation late: no sync on the fresh work
        _report(pending, bar, writer, desc)
      pending = (k, int(eval_at[k]), int(eval_at[k - 1]) if k else 0, bad,
                 {n: buffers[n][:, k] for n in ("test_acc", "train_acc", "train_loss")}, ids)
      if ckpt is not None and (k % checkpoint_every == 0 or k == e - 1):
        _check_finite(bad, ids, ckpt)  # never checkpoint a diverged state
        ckpt.save(k, states, buffers, {"eval_index": k, "step": int(eval_at[k]),
                                       "seed_ids": [int(i) for i in ids]})
    if pending is not None:
      _report(pending, bar, writer, desc)
  finally:
    if bar is not None:
      bar.close()
    if ckpt is not None:
      ckpt.close()
  out = dict(buffers)
  if train_predictions == "final":
    out["train_predictions"] = predict(states, data.x_train)
  return out


def _check_finite(bad: jax.Array, ids: np.ndarray, ckpt=None) -> None:
  bad = sharding.to_host(bad)
  if (bad >= 0).any():
    j = int(np.argmax(bad >= 0))
    last = ckpt.latest() if ckpt is not None else None
    raise FloatingPointError(
        f"non-finite loss in seed {int(ids[j])} at step {int(bad[j])}; the last good checkpoint "
        f"is evaluation {last} (lower the learning rate, or rerun to resume from it)")


def _report(pending, bar, writer, desc) -> None:
  k, step, prev_step, bad, metrics, ids = pending
  _check_finite(bad, ids)
  means = {f"{desc.split()[0]}/{n}": float(np.mean(sharding.to_host(v)))
           for n, v in metrics.items()}
  if bar is not None:
    bar.update(step - prev_step)
    bar.set_postfix({n.split("/")[-1]: f"{v:.3f}" for n, v in means.items()})
  if writer is not None:
    writer.write_scalars(step, means)


def _progress_bar(enabled: bool, total: int, initial: int, desc: str):
  if not enabled:
    return None
  from tqdm.auto import tqdm
  return tqdm(total=total, initial=initial, desc=desc, unit="step", dynamic_ncols=True)


def num_train_steps(config: ml_collections.ConfigDict, n_train: int) -> int:
  """``num_steps``, or ``num_epochs`` × (batches per epoch) when num_epochs is set."""
  if config.get("num_epochs") is None:
    return int(config.num_steps)
  return max(1, int(round(config.num_epochs * (n_train // config.batch_size))))


def _check_workdir(config: ml_collections.ConfigDict, workdir: Path) -> Results | None:
  """Refuses a workdir holding another config; returns the results of a finished same run.

  Writes nothing but the folder itself. A workdir whose config differs but that holds no
  training progress (no checkpoint, reference or results file: e.g. a run that failed on bad
  input) is treated as fresh, so the corrected rerun is never blocked by its own failed attempt.
  """
  io_lib.check_writable(workdir)
  path = workdir / io_lib.CONFIG_FILE
  if not path.exists():
    return None
  changed = config_lib.diff(io_lib.read_json(path), config_lib.to_dict(config))
  progress = [sub for sub in ("checkpoints", "references", io_lib.RESULTS_FILE)
              if (workdir / sub).exists() and any((workdir / sub).iterdir()
                                                   if (workdir / sub).is_dir() else [True])]
  if changed and not progress:
    logging.info("%s holds a config but no training progress; starting afresh", workdir)
  elif changed and not config.overwrite:
    raise ValueError(f"workdir {str(workdir)!r} holds a run with a different config:\n  "
                     + "\n  ".join(changed) + "\nuse a new workdir or --config.overwrite=True")
  elif changed:
    logging.warning("overwriting the run in %s (config changed: %s)", workdir, changed)
    import shutil
    for sub in ("checkpoints", "references", "tensorboard"):
      shutil.rmtree(workdir / sub, ignore_errors=True)
    (workdir / io_lib.RESULTS_FILE).unlink(missing_ok=True)
  elif (workdir / io_lib.RESULTS_FILE).exists():
    logging.info("%s already holds the finished run; not retraining", workdir)
    return Results(io_lib.read_npz(workdir / io_lib.RESULTS_FILE), workdir)
  return None


def _reference_labels(ref, f_out, t0_index) -> np.ndarray | None:
  if ref.trained_on == "final_predictions":
    tp = f_out["train_predictions"]  # [S, n] or, when recorded at every evaluation, [S, E, n]
    return tp if tp.ndim == 2 else tp[:, -1]
  if ref.trained_on == "predictions_at_T0":
    tp = f_out["train_predictions"]  # [S, E, n]
    return tp[np.arange(tp.shape[0]), t0_index]
  return None


def train_reference(config: ml_collections.ConfigDict, name: str, data: _Data,
                    ds: datasets_lib.Dataset, seed_ids: np.ndarray,
                    labels: np.ndarray | None = None, workdir: Path | None = None
                    ) -> dict[str, np.ndarray]:
  """Trains reference ``config.references[name]`` for every seed; test predictions [S, N].

  ``labels``: [S, n] per-seed targets (F's predictions), default: the training labels. With a
  ``workdir`` the result is cached in ``references/<name>.npz`` (reused on resume).
  """
  ref = config.references[name]
  cache = None if workdir is None else workdir / "references" / f"{name}.npz"
  if cache is not None and cache.exists():
    return io_lib.read_npz(cache)
  tr, strategy = _trainer(config, ref.model, ref.model_kwargs, ref.optimizer, ref.loss,
                          ref.batch_size, ref.num_steps, ds)
  out = run_seeds(tr, data, ds.y_train if labels is None else labels, config.seed, seed_ids,
                  np.array([0, ref.num_steps]), strategy=strategy,
                  seeds_per_chunk=config.seeds_per_chunk, salt=f"reference/{name}",
                  progress=config.progress, desc=f"ref:{name}")
  res = {k: sharding.to_host(out[k])[:, -1] for k in ("predictions", "test_acc", "train_acc")}
  if cache is not None:
    io_lib.write_npz(cache, res)
  return res


def compute_measures(predictions: np.ndarray, ref_predictions: np.ndarray, y_test: np.ndarray,
                     num_classes: int, bias_correction: str | None = None
                     ) -> dict[str, np.ndarray]:
  """Every InfoMeasures field [S, E] of F's predictions [S, E, N] against L's [S, N] or [N]."""
  return scoring.measures(predictions, ref_predictions, y_test, num_classes, bias_correction)


def train(config: ml_collections.ConfigDict, workdir: str | Path | None) -> Results:
  """Trains F and the references for every seed and scores every evaluation; see module doc."""
  config_lib.validate(config)
  if config.distributed:
    jax.distributed.initialize()
  workdir = Path(workdir) if workdir is not None else None
  if workdir is not None:
    done = _check_workdir(config, workdir)
    if done is not None:
      return done
  # Everything that can fail on bad input runs before config.json is written.
  ds = datasets_lib.get_dataset(config.dataset)
  config_lib.validate_for_data(config, ds.x_train.shape, ds.num_classes)
  probe = probe_grid(config.eval.probe_grid) if config.eval.probe_grid else None
  data = _Data.create(ds, config.eval.train_eval_size, probe)
  num_steps = num_train_steps(config, len(ds.y_train))
  eval_at = eval_lib.eval_steps(num_steps, config.eval.schedule, config.eval.num_points,
                                config.eval.every)
  seed_ids = np.arange(config.num_seeds)
  refs = config.references
  need = {r.trained_on for r in refs.values()}
  train_preds = ("all" if "predictions_at_T0" in need else
                 "final" if "final_predictions" in need else "none")
  tr, strategy = _trainer(config, config.model, config.model_kwargs, config.optimizer,
                          config.loss, config.batch_size, num_steps, ds)
  if workdir is not None and jax.process_index() == 0:  # multi-host: one writer
    io_lib.write_json(workdir / io_lib.CONFIG_FILE, config_lib.to_dict(config))
  writer = io_lib.MetricWriter(workdir, enabled=workdir is not None and jax.process_index() == 0)
  writer.write_hparams(config_lib.to_dict(config))
  lookup = _F_LOOKUP.get()  # F trained elsewhere (sgd_phases.sweep), or None: train it here
  f_dev = None if lookup is None else lookup(config, train_preds)
  f_dev = f_dev if f_dev is not None else run_seeds(
      tr, data, ds.y_train, config.seed, seed_ids, eval_at,
      strategy=strategy, seeds_per_chunk=config.seeds_per_chunk,
      ckpt_dir=None if workdir is None else workdir / "checkpoints",
      checkpoint_every=config.checkpoint_every, progress=config.progress,
      desc="F", writer=writer, train_predictions=train_preds)
  f_out = {k: sharding.to_host(v) for k, v in f_dev.items()}  # gathered for results.npz
  arrays: dict[str, np.ndarray] = {
      "steps": eval_at, "seed_ids": seed_ids, "y_test": ds.y_test.astype(np.int32),
      "num_classes": np.int64(ds.num_classes), "predictions": f_out["predictions"],
      **{k: f_out[k] for k in BUFFER_KEYS}}
  if probe is not None:
    arrays["probe_inputs"] = probe
    arrays["probe_predictions"] = f_out["probe_predictions"]
  ref_out = {}
  late = ("predictions_at_T0", "snapshot_at_T0")
  for name, ref in refs.items():  # references that do not depend on T_0
    if ref.trained_on not in late:
      ref_out[name] = train_reference(config, name, data, ds, seed_ids,
                                      _reference_labels(ref, f_out, None), workdir)
  t0 = _t0(config, arrays, ref_out, ds.num_classes)
  late_refs = [name for name, ref in refs.items() if ref.trained_on in late]
  reached = t0 >= 0
  if late_refs and not reached.all():
    logging.warning("T_0 never reached by seeds %s: their T_0-dependent references %s are "
                    "undefined (predictions -1, measures NaN)",
                    [int(i) for i in seed_ids[~reached]], late_refs)
  rows = np.arange(len(seed_ids))  # positions, whatever the seed ids are
  at_t0 = np.where(reached, t0, len(eval_at) - 1)  # stand-in index, masked out below
  for name in late_refs:
    if refs[name].trained_on == "snapshot_at_T0":
      out = {"predictions": f_out["predictions"][rows, at_t0].copy(),
             "test_acc": f_out["test_acc"][rows, at_t0]}
    else:
      out = train_reference(config, name, data, ds, seed_ids,
                            _reference_labels(refs[name], f_out, at_t0), workdir)
      out = {k: np.array(v) for k, v in out.items()}
    out["predictions"][~reached] = scoring.UNDEFINED
    out["test_acc"] = np.where(reached, out["test_acc"], np.nan)
    ref_out[name] = out
  arrays["reference_names"] = np.array(list(refs.keys()), dtype=str)
  for name, out in ref_out.items():
    arrays[f"ref/{name}/predictions"] = out["predictions"]
    arrays[f"ref/{name}/test_acc"] = out["test_acc"]
    arrays.update(score_reference(config, name, f_dev["predictions"], out["predictions"],
                                  ds.y_test, ds.num_classes))
  arrays["t0_index"] = t0
  arrays["t0_step"] = np.where(t0 >= 0, eval_at[np.maximum(t0, 0)], -1)
  arrays["t0_reference"] = np.array(config.t0.reference or "")
  results = Results(arrays, workdir)
  if workdir is not None and jax.process_index() == 0:
    _write_metrics(writer, results)
    io_lib.write_npz(workdir / io_lib.RESULTS_FILE, arrays)
  writer.close()
  return results


def score_reference(config: ml_collections.ConfigDict, name: str, predictions: Any,
                    ref_predictions: np.ndarray, y_test: np.ndarray, num_classes: int
                    ) -> dict[str, np.ndarray]:
  """``mi/<name>/<field>`` [S, E] and, with ``config.null.num_permutations`` > 0, the
  conditional-independence null ``null/<name>/mu`` [P, S, E] of F's predictions against one
  reference (rows of −1 = undefined for that seed: NaN)."""
  bc = config.get("bias_correction")
  out = {f"mi/{name}/{f}": v for f, v in scoring.measures(
      predictions, ref_predictions, y_test, num_classes, bc).items()}
  p = int(config.null.num_permutations)
  if p > 0:
    out[f"null/{name}/mu"] = scoring.null_mu(predictions, ref_predictions, y_test, num_classes,
                                             scoring.null_key(config.seed, name), p, bc)
  return out


def _t0(config, arrays, ref_out, num_classes) -> np.ndarray:
  """T_0 per seed (index into steps, −1 if never) by ``config.t0.rule``."""
  name = config.t0.reference
  if not name or name not in ref_out:
    return np.full(len(arrays["seed_ids"]), -1, np.int64)
  kw = {}
  if config.t0.rule == "mu_ratio":
    m = compute_measures(arrays["predictions"], ref_out[name]["predictions"], arrays["y_test"],
                         num_classes, config.bias_correction)
    kw = dict(mu=m["mu"], i_fy=m["i_fy"], delta=config.t0.delta)
  return np.asarray(stats.t0_index(arrays["test_acc"], ref_out[name]["test_acc"],
                                   rule=config.t0.rule, **kw), np.int64)


def _write_metrics(writer: io_lib.MetricWriter, results: Results) -> None:
  """metrics.jsonl: one row per evaluation, means over seeds (rewritten whole at the end)."""
  writer.reset()
  a = results.arrays
  for k, step in enumerate(a["steps"]):
    row = {n: float(np.mean(a[n][:, k])) for n in BUFFER_KEYS}
    for r in results.reference_names:
      for f in ("i_fy", "mu", "i_fy_given_l"):
        row[f"{r}/{f}"] = float(np.mean(a[f"mi/{r}/{f}"][:, k]))
    writer.write_scalars(int(step), row)
