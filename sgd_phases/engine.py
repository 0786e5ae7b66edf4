"""The engine: many seeds of one network trained in one compiled program, evaluated on device.

    from sgd_phases import engine
    tr = engine.make_trainer("mlp", {"width": 64}, optimizer, "cross_entropy", batch_size=32,
                             num_steps=1000, num_classes=2)
    data = engine.EvalData.create(dataset, train_eval_size=2000)
    out = engine.run_seeds(tr, data, dataset.y_train, engine.SeedSet(seed=0, ids=np.arange(8)),
                           eval_at=np.array([0, 10, 100, 1000]),
                           options=engine.RunOptions(strategy="vmap"))
    out["predictions"]                     # [8 seeds, 4 evaluations, n_test] hard predictions

``run_seeds`` trains the seeds chunk by chunk (``RunOptions.seeds_per_chunk``): per chunk it
runs the four programs of :mod:`sgd_phases.programs` (``init``, ``segment``, ``record``,
``predict``, compiled once per trainer), evaluation by evaluation, reading the host's copy of
the metrics one evaluation late, checkpointing and honouring preemption. Seed i always trains
from ``fold_in(key(seed), i)``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import zlib
from typing import Any, Mapping

import flax
import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from sgd_phases import checkpointing, io_lib, lanes, optim, preemption, programs, sharding, steps
from sgd_phases import datasets as datasets_lib
from sgd_phases import models as models_lib
from sgd_phases.programs import BUFFER_KEYS  # noqa: F401 (re-exported)

# Dense models with at least this many parameters per seed are mapped over seeds on CPU.
CPU_MAP_MIN_PARAMS = 100_000


def resolve_strategy(strategy: str, model: str, backend: str | None = None,
                     num_params: int | None = None) -> str:
  """``auto`` -> "vmap" or "map" for this backend.

  CPU: "map" for convolutional models (vmap turns convolutions into grouped ones) and for
  dense models with at least ``CPU_MAP_MIN_PARAMS`` parameters per seed when ``num_params`` is
  given (the stacked parameters and gradients of many seeds overflow the caches, while lax.map
  keeps one seed's working set hot); "vmap" for small dense models, where batching the tiny
  per-seed matmuls wins. Measured: ``benchmarks/results/train_throughput_cpu.json`` (MNIST MLP
  and paper_cnn, map vs vmap at 16 seeds), ``train_throughput_cnn4_cpu.json``; the README's
  performance section quotes them. GPU/TPU: "vmap" (not measured: no accelerator was lent).
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
  shapes = jax.eval_shape(lambda x: tr.model.init(jax.random.key(0), x),  # (nothing compiled)
                          jax.ShapeDtypeStruct((1,) + tuple(x_example.shape), jnp.float32))
  return models_lib.count_params(shapes["params"])


def make_trainer(model: str, model_kwargs: Mapping[str, Any], optimizer: Any, loss: str,
                 batch_size: int, num_steps: int, num_classes: int,
                 eval_batch_size: int = 2000, unroll: bool = False,
                 sampler: Any = None) -> steps.Trainer:
  """The static description of what ``run_seeds`` trains. ``unroll``: for the "unroll" seed
  strategy (no loops in the programs), where convolutions default to XLA's native ones.
  ``sampler``: draw every training batch fresh inside the step
  (``datasets.sequence_sampling.Sampler``, a dataset's ``meta["train_sampler"]``) instead of
  reading the stored training set."""
  kwargs = dict(model_kwargs)
  if unroll and "conv_impl" in models_lib.model_kwargs(model):
    if kwargs.get("conv_impl", "auto") == "auto":
      kwargs["conv_impl"] = "lax"
  module = models_lib.get_model(model, num_classes, **kwargs)
  return steps.Trainer(model=module, tx=optim.make_optimizer(optimizer, num_steps), loss=loss,
                       batch_size=batch_size, num_classes=num_classes,
                       has_batch_stats=models_lib.has_batch_stats(module),
                       eval_batch_size=eval_batch_size, unroll=unroll, sampler=sampler,
                       optimizer_key=optim.optimizer_key(optimizer, num_steps))


def seed_keys(seed: int, seed_ids: np.ndarray, salt: str = "") -> tuple[jax.Array, jax.Array]:
  """(init keys, data keys) [S] for these seed indices; ``salt`` separates references."""
  return _seed_keys(int(seed), np.asarray(seed_ids, np.uint32), salt)


@functools.partial(jax.jit, static_argnums=(0, 2))  # one small program, not an op-by-op chain
def _seed_keys(seed: int, seed_ids: jax.Array, salt: str) -> tuple[jax.Array, jax.Array]:
  base = jax.random.key(seed)
  if salt:
    base = jax.random.fold_in(base, zlib.crc32(salt.encode()) & 0x7FFFFFFF)
  keys = jax.vmap(lambda i: jax.random.fold_in(base, i))(seed_ids)
  split = jax.vmap(jax.random.split)(keys)
  return split[:, 0], split[:, 1]


@flax.struct.dataclass
class EvalData:
  """Device copies of the arrays the programs read (replicated on every device).

  ``x_train``: every training input; ``x_test``/``y_test``: the test set; ``x_tr``/``y_tr_clean``:
  the fixed train-evaluation subset (the first examples, ``train_eval_size`` scored ones) and
  its clean labels; ``x_probe``: optional extra inputs whose predictions are recorded (a 2-D grid).
  """
  x_train: jax.Array
  x_test: jax.Array
  y_test: jax.Array
  x_tr: jax.Array
  y_tr_clean: jax.Array
  x_probe: jax.Array | None = None

  @classmethod
  def create(cls, ds: datasets_lib.Dataset, train_eval_size: int,
             x_probe: np.ndarray | None = None) -> "EvalData":
    """``train_eval_size`` counts scored examples: sequence data's positions (the subset is
    the first ceil(train_eval_size / (T − 1)) sequences), as its test set counts them."""
    per_example = int(np.prod(ds.y_train.shape[1:]))  # 1, or T − 1 positions per sequence
    m = min(-(-train_eval_size // per_example), len(ds.y_train))
    put = sharding.to_device
    return cls(put(ds.x_train), put(ds.x_test), put(ds.y_test), put(ds.x_train[:m]),
               put(ds.y_train_clean[:m]), None if x_probe is None else put(x_probe, np.float32))


def probe_grid(size: int, extent: float = 1.1) -> np.ndarray:
  """[size², 2] grid over [−extent, extent]² (row-major: x1 varies fastest)."""
  g = np.linspace(-extent, extent, size, dtype=np.float32)
  x1, x2 = np.meshgrid(g, g)
  return np.stack([x1.ravel(), x2.ravel()], axis=1)


@dataclasses.dataclass(frozen=True)
class SeedSet:
  """Seeds ``ids`` of a run with base ``seed``; ``salt`` separates a reference's seeds from F's."""
  seed: int
  ids: np.ndarray
  salt: str = ""


@dataclasses.dataclass(frozen=True)
class RunOptions:
  """How ``run_seeds`` runs: seed strategy (vmap | map | unroll, already resolved), seeds per
  compiled program (0 = all), checkpoints (an Orbax checkpoint every ``checkpoint_every``
  evaluations under ``ckpt_dir``), progress bar and metric writer, and which train-set
  predictions to keep ("none", "final": at the end, "all": at every evaluation), and the dtype
  of the test probabilities recorded at every evaluation ("" = none; "float32" | "float16":
  ``probabilities`` [S, E, N, K], for the soft measures), and at most how many seed lanes
  train side by side on CPU (``sgd_phases.lanes``: 0 = one per core, 1 = none)."""
  strategy: str = "vmap"
  seeds_per_chunk: int = 0
  ckpt_dir: epath.Path | None = None
  checkpoint_every: int = 0
  progress: bool = False
  desc: str = "train"
  writer: io_lib.MetricWriter | None = None
  train_predictions: str = "none"
  probabilities: str = ""
  lanes: int = 0


def run_seeds(tr: steps.Trainer, data: EvalData, labels: np.ndarray, seeds: SeedSet,
              eval_at: np.ndarray, options: RunOptions = RunOptions(),
              init_transform: Any = None) -> dict[str, jax.Array]:
  """Trains ``seeds`` chunk by chunk; returns device arrays [S, E, ...] (``BUFFER_KEYS``,
  ``predictions``, and ``train_predictions`` / ``probe_predictions`` when asked for).

  With several devices each chunk's seeds are sharded over them (``sgd_phases.sharding``;
  chunks are padded to a multiple of the device count and the padding dropped) and the
  returned arrays stay sharded.

  ``labels``: [n] shared or [S, n] per-seed training labels (with ``tr.sampler`` only those of
  the train-evaluation subset are read: the training batches are drawn fresh). ``eval_at``:
  steps at which to record predictions and metrics (the last one is the end of training).
  ``init_transform``: optional ``(states, rows) -> states`` applied to a chunk's fresh states
  (``rows``: positions in ``seeds.ids``), e.g. per-seed hyperparameters of
  ``sgd_phases.sweep``'s nested runs.
  """
  mesh = sharding.seed_mesh()
  data = sharding.put_replicated(data, mesh)
  chunk = options.seeds_per_chunk or len(seeds.ids)
  outs = []
  for c, lo in enumerate(range(0, len(seeds.ids), chunk)):
    ids = seeds.ids[lo:lo + chunk]
    per_seed = labels.ndim > data.y_test.ndim  # [S, n, ...]: every seed's own labels
    lab = labels[lo:lo + chunk] if per_seed else labels
    padded = sharding.pad_seed_ids(ids, mesh)
    if per_seed and len(padded) > len(ids):
      lab = np.concatenate([lab, np.repeat(lab[-1:], len(padded) - len(ids), 0)])
    ckpt = (None if options.ckpt_dir is None
            else options.ckpt_dir / f"chunk_{c:03d}_seeds_{ids[0]}-{ids[-1]}")
    opts = dataclasses.replace(options, ckpt_dir=ckpt,
                               desc=f"{options.desc} seeds {ids[0]}-{ids[-1]}")
    transform = None if init_transform is None else functools.partial(
        init_transform, rows=np.resize(np.arange(lo, lo + len(ids)), len(padded)))
    out = _run_chunk(tr, data, lab, dataclasses.replace(seeds, ids=padded), eval_at, opts, mesh,
                     transform)
    outs.append({k: v[:len(ids)] if len(padded) > len(ids) else v for k, v in out.items()})
  if len(outs) == 1:
    return outs[0]
  return {k: jnp.concatenate([o[k] for o in outs]) for k in outs[0]}


def _run_chunk(tr: steps.Trainer, data: EvalData, labels: np.ndarray, seeds: SeedSet,
               eval_at: np.ndarray, opts: RunOptions, mesh: Any, init_transform: Any = None
               ) -> dict[str, jax.Array]:
  ids, desc = seeds.ids, opts.desc
  s, e = len(ids), len(eval_at)
  init_keys, data_keys = sharding.put_seeded(seed_keys(seeds.seed, ids, seeds.salt), mesh)
  source, seed_labels, labels_tr = programs.training_data(tr, data, labels, s, mesh)
  init, segment, record, predict = programs.build(tr, opts.strategy, mesh)
  states = init(init_keys, (), data.x_train[0])
  states = sharding.put_seeded(states if init_transform is None else init_transform(states), mesh)
  buffers = programs.recording_buffers(tr, data, s, e, opts.train_predictions, mesh,
                                       opts.probabilities)
  shared = {"x_test": data.x_test, "y_test": data.y_test, "x_tr": data.x_tr,
            "y_tr_clean": data.y_tr_clean}
  if opts.train_predictions == "all":
    shared["x_train_full"] = data.x_train
  if data.x_probe is not None:
    shared["x_probe"] = data.x_probe

  ckpt, k0 = None, 0
  if opts.ckpt_dir is not None and opts.checkpoint_every:
    ckpt = checkpointing.ChunkCheckpointer(opts.ckpt_dir)
    latest = ckpt.latest()
    if latest is not None:
      states, buffers, _ = ckpt.restore(latest, states, buffers)
      k0 = latest + 1
      logging.info("%s: resumed from checkpoint at step %d", desc, int(eval_at[latest]))
  i32 = np.int32  # step and evaluation indices: host scalars, passed to the programs
  n_train = 0 if tr.sampler is not None else data.x_train.shape[0]  # (a sampler: no order)
  start = int(eval_at[k0 - 1]) if k0 else 0
  perm = programs.first_perm(data_keys, start, n_train, tr.batch_size, mesh)
  seeded = (data_keys, seed_labels)
  if not isinstance(segment, programs.StepLoop):  # (its step program compiles at the first step)
    segment = lanes.compile_segment(
        segment, (states, perm), seeded, (source, i32(0), i32(0)),
        lanes.resolve(opts.lanes, opts.strategy, s, mesh),
        functools.partial(programs.compile_logged, what=f"{desc} SGD segment"))
  record = programs.compile_logged(record, states, buffers, i32(0), labels_tr, shared,
                                   what=f"{desc} evaluation")
  bar = _progress_bar(opts.progress, int(eval_at[-1]), start, desc)
  bad = jax.device_put(np.full((s,), -1, np.int32))
  pending = None
  watch = preemption.watch() if ckpt is not None else contextlib.nullcontext()
  try:
    with watch:
      for k in range(k0, e):
        if k > 0:
          states, bad_k, perm = segment((states, perm), seeded,
                                        (source, i32(eval_at[k - 1]), i32(eval_at[k])))
          # a sampler's empty [S, 0] order comes back replicated on a multi-device mesh (XLA
          # shards no empty axis): place it as the compiled segment expects (else a no-op)
          perm = sharding.put_seeded(perm, mesh)
          bad = jnp.where(bad < 0, bad_k, bad)
        buffers = record(states, buffers, i32(k), labels_tr, shared)
        if pending is not None:  # host reads one evaluation late: no sync on the fresh work
          _report(pending, bar, opts.writer, desc, ckpt)
        pending = (k, int(eval_at[k]), int(eval_at[k - 1]) if k else 0, bad,
                   {n: buffers[n][:, k] for n in ("test_acc", "train_acc", "train_loss")}, ids)
        regular = ckpt is not None and (k % opts.checkpoint_every == 0 or k == e - 1)
        stop = ckpt is not None and k < e - 1 and preemption.requested()
        if regular or stop:
          _check_finite(bad, ids, ckpt)  # never checkpoint a diverged state
          ckpt.save(k, states, buffers, {"eval_index": k, "step": int(eval_at[k]),
                                         "seed_ids": [int(i) for i in ids]})
        if stop:
          _report(pending, bar, opts.writer, desc, ckpt)
          ckpt.wait()
          logging.warning("%s: preempted; checkpoint saved at step %d (evaluation %d)", desc,
                          int(eval_at[k]), k)
          raise preemption.Preempted(int(eval_at[k]), k)
    if pending is not None:
      _report(pending, bar, opts.writer, desc, ckpt)
  finally:
    if bar is not None:
      bar.close()
    if ckpt is not None:
      ckpt.close()
  out = dict(buffers)
  if opts.train_predictions == "final":
    out["train_predictions"] = predict(states, (), data.x_train)
  return out


def _check_finite(bad: jax.Array, ids: np.ndarray, ckpt=None) -> None:
  bad = sharding.to_host(bad)
  if (bad >= 0).any():
    j = int(np.argmax(bad >= 0))
    if ckpt is not None:
      ckpt.wait()
    last = ckpt.latest() if ckpt is not None else None
    where = ("no checkpoint was saved" if last is None else
             f"the last good checkpoint is evaluation {last} (saved before the divergence)")
    raise FloatingPointError(
        f"non-finite loss in seed {int(ids[j])} at step {int(bad[j])}; {where}. Lower the "
        "learning rate: the corrected rerun may use the same workdir (a diverged attempt "
        "blocks nothing)")


def _report(pending, bar, writer, desc, ckpt=None) -> None:
  k, step, prev_step, bad, metrics, ids = pending
  _check_finite(bad, ids, ckpt)
  means = {f"{desc.split()[0]}/{n}": float(np.mean(sharding.to_host(v)))
           for n, v in metrics.items()}
  if bar is not None:
    bar.update(step - prev_step)
    bar.set_postfix({n.split("/")[-1]: f"{v:.3f}" for n, v in means.items()},
                    refresh=False)  # drawn with the next update, at the bar's own rate
  if writer is not None:
    writer.write_scalars(step, means)


def _progress_bar(enabled: bool, total: int, initial: int, desc: str):
  if not enabled:
    return None
  import sys

  from tqdm.auto import tqdm
  # In a log file (no terminal) each refresh is a new line: at most one every 30 s there.
  interval = 0.1 if sys.stderr.isatty() else 30.0
  return tqdm(total=total, initial=initial, desc=desc, unit="step", dynamic_ncols=True,
              mininterval=interval, maxinterval=max(interval, 10.0))
