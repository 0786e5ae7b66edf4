"""Information measures between hard predictions: I(F;Y), I(F;Y|L) and μ_Y(F;L).

Everything is computed from one K×K×K contingency table over (f, l, y) with the
plug-in estimator, in **bits**, with 0·log 0 = 0 (``xlogy``; no epsilon in logs).
The paper's performance correlation is the co-information

    μ_Y(F;L) = I(F;Y) − I(F;Y|L) = I(F;L) − I(F;L|Y) = I(L;Y) − I(L;Y|F).

Synopsis::

    from sgd_phases import mutual_info as mi
    # f: [seeds, ckpts, N], l: [seeds, 1, N] (or [N]), y: [N]; integer labels in [0, K).
    m = mi.information_measures(f, l, y, num_classes=10)   # InfoMeasures of [seeds, ckpts]
    m.mu, m.i_fy, m.acc_f
    t = mi.contingency_table(f, l, y, 10)                   # int32 [seeds, ckpts, 10, 10, 10]
    m = mi.measures_from_table(t, bias_correction="miller_madow")
    null = mi.conditional_null(f, l, y, 10, jax.random.key(0), 100)  # [100, seeds, ckpts]:
    # μ with L permuted within each class of Y (the F ⟂ L | Y baseline of every headline)

Jit/vmap: all public functions are jit- and vmap-able with ``num_classes`` (and
``bias_correction``, ``method``, ``num_permutations``) static, e.g.
``jax.jit(information_measures, static_argnames="num_classes")``; the jitted kernels are
already wrapped with those static arguments. Input checks (:func:`validate`): dtypes, shapes
and ``num_classes`` are always checked (they are static); the label *range* is checked only
when the inputs are concrete (eager calls; this reads two scalars per array back to the
host). Under ``jit``/``vmap`` out-of-range labels are not detected and give meaningless counts.

How the table is built (``method``): ``"scatter"`` (one int32 scatter-add of flat indices) or
``"onehot"`` (one-hots contracted over N by ``dot_general``, exact integer accumulation);
``"auto"`` picks per backend and shape (``resolve_method``; the CPU timings behind the rule:
``benchmarks/results/mi_kernel_methods_cpu.md``; GPU/TPU not measured). Tables cost K³·4 bytes
per leading index; K³ < 2^31 (K ≤ 1290) so indices fit in int32; counts are exact int32.

Large K (e.g. K = vocabulary size): ``"sorted"`` (measures only: :func:`information_measures`,
the nulls, :func:`conditional_mutual_information`; not :func:`contingency_table`) never builds
the K³ table. H(F,L,Y) comes from the run lengths of the sorted codes (f·K + l)·K + y
(``jnp.sort`` along N, a cumsum of run starts, a bincount of run ids); the 2-D and 1-D marginals
from dense bincounts when they have ≤ N cells, else by sorting too; each on its own broadcast
leading shape (H(L,Y) once per seed), 2^20 codes at a time (``lax.map`` over leading rows), so
its temporaries are bounded by one chunk whatever K and the leading size. Same entropies,
Miller–Madow terms (observed cells = runs) and float32 sums as from a table: the measures agree
with the table methods to float32 rounding (~2e-6 bits).

``"auto"`` picks "sorted" when K ≥ 32 and K³ ≥ 16 N (speed), or when one call's dense tables
would exceed 1 GiB (4 K³ bytes × leading size: memory), on every backend (GPU/TPU unmeasured);
else the table rule above. Measured with ``python -m benchmarks.mi_large_k`` (→
``benchmarks/results/mi_large_k_cpu.json``; the 2-core shared VM, load 2-4, jax 0.10.2;
f [5, 25, N], l [5, 1, N], y [N]; full InfoMeasures, medians of 5 interleaved rounds; memory =
XLA compiled temp, which matched the peak RSS of the call):

* K = 128, N = 10^5: scatter 1.8 s and 2.0 GiB; onehot 10.1 GiB (not run: ~1.1 s for 5 pairs
  at N = 10^4, so minutes); sorted 1.1-1.2 s and 58 MiB. The conditional null [20, 5, 25]:
  scatter 32 s and 2.1 GiB, sorted 25 s and 32 MiB.
* K = 10, N = 10^5: scatter 0.07-0.10 s (96 MiB), onehot 0.14-0.22 s, sorted 1.1-1.2 s
  (58 MiB): auto keeps scatter.
* sorted costs about the same whatever K (1.1-1.2 s at N = 10^5, 0.14 s at N = 10^4; mostly
  the sort); scatter grows with K³. sorted/scatter at K³/N = 2.6/5.1/8.8/14/21 (N = 10^5,
  K = 64..128): 3.8/2.7/1.4/1.1/0.7; at K³/N = 3.3/6.4/11/18/26 (N = 10^4, K = 32..64):
  4.6/2.9/1.8/1.04/0.71. Crossover K³ ≈ 16 N (10-15 N in runs at load ~9).
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.scipy.special import xlogy

ArrayLike = Any
_LN2 = math.log(2.0)
_METHODS = ("auto", "scatter", "onehot", "sorted")
_TABLE_METHODS = ("auto", "scatter", "onehot")  # "sorted" builds no K×K×K table
_BIAS_CORRECTIONS = (None, "miller_madow")
_CPU_ONEHOT_MAX_K = 4  # measured crossover vs scatter (benchmarks/results/mi_kernel_methods_cpu.md)
_CPU_ONEHOT_MIN_SHARE = 8  # unshared one-hot was 2-10x slower than scatter (same file).
_ACCEL_ONEHOT_MAX_K = 8  # unmeasured heuristic for GPU/TPU.
_ACCEL_ONEHOT_MAX_BYTES = 1 << 30
_SORTED_MIN_K = 32  # below, a table is < 128 KiB per pair: never worth a sort.
_SORTED_MIN_CELLS_PER_EXAMPLE = 16  # sorted when K³ >= 16 N: measured crossover 10-20 N.
_SORTED_MAX_TABLE_BYTES = 1 << 30  # sorted when the dense tables of one call exceed 1 GiB.
_SORTED_CHUNK_ELEMENTS = 1 << 20  # "sorted" sorts at most this many codes at once (4 MiB)


class InfoMeasures(NamedTuple):
  """Information measures in bits (accuracies as fractions), each of shape ``[...]``."""

  i_fy: jax.Array  # I(F;Y)
  i_ly: jax.Array  # I(L;Y)
  i_fl: jax.Array  # I(F;L)
  i_fy_given_l: jax.Array  # I(F;Y|L)
  i_fl_given_y: jax.Array  # I(F;L|Y)
  mu: jax.Array  # μ_Y(F;L) = I(F;Y) − I(F;Y|L)
  h_y: jax.Array  # H(Y)
  acc_f: jax.Array  # P[F = Y]
  acc_l: jax.Array  # P[L = Y]


# ----------------------------------------------------------------------------- validation


def _is_tracer(x: Any) -> bool:
  return isinstance(x, jax.core.Tracer)


def _check_num_classes(num_classes: Any) -> None:
  if isinstance(num_classes, (bool, np.bool_)) or not isinstance(num_classes, (int, np.integer)):
    raise ValueError(f"num_classes must be a Python int, got {num_classes!r}.")
  if num_classes < 2:
    raise ValueError(f"num_classes must be >= 2, got {num_classes}.")
  if num_classes**3 >= 2**31:
    raise ValueError(f"num_classes={num_classes} too large: K**3 must be < 2**31 (K <= 1290).")


def _check_choice(name: str, value: Any, allowed: tuple) -> None:
  if value not in allowed:
    raise ValueError(f"{name} must be one of {allowed}, got {value!r}.")


def validate(
    f: ArrayLike, l: ArrayLike, y: ArrayLike, num_classes: int, *,
    names: tuple[str, str, str] = ("f", "l", "y"),
) -> tuple[int, ...]:
  """Checks inputs and returns the broadcast leading shape; raises ValueError naming the arg.

  Dtype, rank, N and broadcasting are checked always (static); the label range [0, K) only
  for concrete (non-traced) inputs. ``names`` are used in messages (for wrappers).
  """
  _check_num_classes(num_classes)
  arrays = dict(zip(names, (f, l, y)))
  shapes = {}
  for name, x in arrays.items():
    dtype = getattr(x, "dtype", None)
    if dtype is None:
      x = np.asarray(x)
      arrays[name], dtype = x, x.dtype
    if not (jnp.issubdtype(dtype, jnp.integer) and not jnp.issubdtype(dtype, jnp.bool_)):
      raise ValueError(f"{name} must have an integer dtype, got {dtype}.")
    shapes[name] = tuple(np.shape(x))
    if not shapes[name]:
      raise ValueError(f"{name} must have at least one axis (examples), got a scalar.")
  first = names[0]
  n = shapes[first][-1]
  if n < 1:
    raise ValueError(f"{first} must have at least one example on its last axis, got N=0.")
  lead = shapes[first][:-1]
  for name in names[1:]:
    if shapes[name][-1] != n:
      raise ValueError(
          f"{name} has {shapes[name][-1]} examples on its last axis but {first} has {n}.")
    try:
      lead = np.broadcast_shapes(lead, shapes[name][:-1])
    except ValueError:
      raise ValueError(
          f"{name} leading shape {shapes[name][:-1]} does not broadcast with {lead}.") from None
  for name, x in arrays.items():
    if _is_tracer(x):
      continue
    xp = np if isinstance(x, np.ndarray) else jnp
    lo, hi = (int(v) for v in jax.device_get((xp.min(x), xp.max(x))))
    if lo < 0 or hi >= num_classes:
      raise ValueError(
          f"{name} has labels in [{lo}, {hi}], outside [0, num_classes={num_classes}).")
  return tuple(lead)


# ----------------------------------------------------------------------------- tables


def _bincount_rows(idx: jax.Array, length: int) -> jax.Array:
  """Counts of ``idx`` [P, N] (values in [0, length)) per row -> int32 [P, length]."""
  p = idx.shape[0]
  if p * length < 2**31:  # one scatter over flat indices + per-row offsets
    offsets = jnp.arange(p, dtype=jnp.int32)[:, None] * length
    flat = (idx + offsets).reshape(-1)
    counts = jnp.zeros((p * length,), jnp.int32).at[flat].add(1, mode="drop")
    return counts.reshape(p, length)
  return jax.vmap(lambda r: jnp.zeros((length,), jnp.int32).at[r].add(1, mode="drop"))(idx)


def _table_scatter(f: jax.Array, ly: jax.Array, k: int, lead: tuple[int, ...]) -> jax.Array:
  n = f.shape[-1]
  idx = jnp.broadcast_to(f * (k * k) + ly, lead + (n,)).reshape(-1, n)
  return _bincount_rows(idx, k**3).reshape(lead + (k, k, k))


def _table_onehot(f: jax.Array, ly: jax.Array, k: int, lead: tuple[int, ...]) -> jax.Array:
  """One-hot matmul; (l, y)'s broadcast axes become free dims so its one-hot is shared."""
  r, n = len(lead), f.shape[-1]
  batch = [i for i in range(r) if f.shape[i] == ly.shape[i]]
  f_free = [i for i in range(r) if f.shape[i] != ly.shape[i] and ly.shape[i] == 1]
  g_free = [i for i in range(r) if f.shape[i] != ly.shape[i] and f.shape[i] == 1]
  size = lambda axes: math.prod(lead[i] for i in axes)  # noqa: E731
  b, m, g = size(batch), size(f_free), size(g_free)
  f2 = jnp.transpose(f, batch + f_free + g_free + [r]).reshape(b, m, n)
  ly2 = jnp.transpose(ly, batch + g_free + f_free + [r]).reshape(b, g, n)
  if jax.default_backend() == "cpu":  # int8 x int8 -> int32 is exact and fastest on CPU.
    dtype, acc = jnp.int8, jnp.int32
  else:  # 0/1 are exact in bf16 and f32 sums are exact below 2^24 (checked by the caller).
    dtype, acc = jnp.bfloat16, jnp.float32
  a = jax.nn.one_hot(f2, k, dtype=dtype)  # [b, m, n, k]
  c = jax.nn.one_hot(ly2, k * k, dtype=dtype)  # [b, g, n, k*k]
  out = lax.dot_general(a, c, (((2,), (2,)), ((0,), (0,))), preferred_element_type=acc)
  out = out.astype(jnp.int32).transpose(0, 1, 3, 2, 4)  # [b, m, g, k, k*k]
  out = out.reshape([lead[i] for i in batch + f_free + g_free] + [k, k, k])
  order = batch + f_free + g_free
  return jnp.transpose(out, [order.index(i) for i in range(r)] + [r, r + 1, r + 2])


def _choose_method(k: int, n: int, lead: tuple[int, ...], ly_shape: tuple[int, ...],
                   table: bool = False) -> str:
  pairs, ly_pairs = math.prod(lead), math.prod(ly_shape[:-1])
  if not table and ((k >= _SORTED_MIN_K and k**3 >= _SORTED_MIN_CELLS_PER_EXAMPLE * n)
                    or 4 * k**3 * pairs > _SORTED_MAX_TABLE_BYTES):
    return "sorted"
  if jax.default_backend() == "cpu":
    ok = k <= _CPU_ONEHOT_MAX_K and pairs >= _CPU_ONEHOT_MIN_SHARE * ly_pairs
    return "onehot" if ok else "scatter"
  onehot_bytes = 2 * n * (pairs * k + ly_pairs * k * k)
  ok = k <= _ACCEL_ONEHOT_MAX_K and n < 2**24 and onehot_bytes <= _ACCEL_ONEHOT_MAX_BYTES
  return "onehot" if ok else "scatter"


def resolve_method(num_classes: int, n: int, lead: tuple[int, ...],
                   ly_shape: tuple[int, ...], *, table: bool = False) -> str:
  """What ``method="auto"`` becomes on this backend for f ``[*lead, n]`` against (l, y) of
  leading shape ``ly_shape[:-1]`` (recorded with a run's results): in
  :func:`information_measures` and the nulls, or with ``table=True`` in
  :func:`contingency_table` (which never picks "sorted")."""
  return _choose_method(num_classes, n, tuple(lead), tuple(ly_shape), table)


@functools.partial(jax.jit, static_argnames=("num_classes", "method"))
def _contingency_table(f, l, y, num_classes: int, method: str = "auto") -> jax.Array:
  k = num_classes
  f, l, y = (jnp.asarray(x).astype(jnp.int32) for x in (f, l, y))
  lead = tuple(np.broadcast_shapes(f.shape[:-1], l.shape[:-1], y.shape[:-1]))
  ly = l * k + y
  r = len(lead) + 1
  f = f.reshape((1,) * (r - f.ndim) + f.shape)
  ly = ly.reshape((1,) * (r - ly.ndim) + ly.shape)
  if method == "auto":
    method = _choose_method(k, f.shape[-1], lead, ly.shape, table=True)
  if method == "onehot" and (jax.default_backend() == "cpu" or f.shape[-1] < 2**24):
    return _table_onehot(f, ly, k, lead)
  return _table_scatter(f, ly, k, lead)


def contingency_table(
    f: ArrayLike, l: ArrayLike, y: ArrayLike, num_classes: int, *, method: str = "auto"
) -> jax.Array:
  """int32 counts ``[..., K, K, K]`` over (f, l, y); labels ``[..., N]``, leading dims broadcast.

  ``method`` in {"auto", "scatter", "onehot"} picks the kernel (module docstring); all give
  identical counts. ("sorted" is not accepted here: it exists to never build this table.)
  """
  _check_choice("method", method, _TABLE_METHODS)
  validate(f, l, y, num_classes)
  return _contingency_table(f, l, y, num_classes=num_classes, method=method)


# ----------------------------------------------------------------------------- measures


def _entropy(counts: jax.Array, ndim: int, n: jax.Array, miller_madow: bool) -> jax.Array:
  """Entropy in bits of the last ``ndim`` axes of ``counts`` (int32); ``n`` = total."""
  c = counts.reshape(counts.shape[: counts.ndim - ndim] + (-1,))
  p = c.astype(jnp.float32) / n[..., None]
  h = -jnp.sum(xlogy(p, p), axis=-1) / _LN2
  if miller_madow:  # (m - 1) / (2 N ln 2) with m = observed non-zero cells.
    m = jnp.sum(c > 0, axis=-1).astype(jnp.float32)
    h = h + (m - 1.0) / (2.0 * n * _LN2)
  return h


@functools.partial(jax.jit, static_argnames=("bias_correction",))
def _measures_from_table(table: jax.Array, bias_correction: str | None = None) -> InfoMeasures:
  mm = bias_correction == "miller_madow"
  t = jnp.asarray(table).astype(jnp.int32)
  t_fl, t_fy, t_ly = t.sum(-1), t.sum(-2), t.sum(-3)
  t_f, t_l, t_y = t_fl.sum(-1), t_fl.sum(-2), t_ly.sum(-2)
  n = t_f.sum(-1).astype(jnp.float32)
  h = functools.partial(_entropy, n=n, miller_madow=mm)
  h_flj, h_fl, h_fy, h_ly = h(t, 3), h(t_fl, 2), h(t_fy, 2), h(t_ly, 2)
  h_f, h_l, h_y = h(t_f, 1), h(t_l, 1), h(t_y, 1)
  return _from_entropies(h_f, h_l, h_y, h_fl, h_fy, h_ly, h_flj,
                         acc_f=jnp.trace(t_fy, axis1=-2, axis2=-1).astype(jnp.float32) / n,
                         acc_l=jnp.trace(t_ly, axis1=-2, axis2=-1).astype(jnp.float32) / n)


def _from_entropies(h_f, h_l, h_y, h_fl, h_fy, h_ly, h_flj, acc_f, acc_l) -> InfoMeasures:
  """Every measure from the entropies of F, L, Y and their joints (bits)."""
  i_fy = h_f + h_y - h_fy
  i_fy_given_l = h_fl + h_ly - h_flj - h_l
  return InfoMeasures(
      i_fy=i_fy,
      i_ly=h_l + h_y - h_ly,
      i_fl=h_f + h_l - h_fl,
      i_fy_given_l=i_fy_given_l,
      i_fl_given_y=h_fy + h_ly - h_flj - h_y,
      mu=i_fy - i_fy_given_l,
      h_y=h_y,
      acc_f=acc_f,
      acc_l=acc_l,
  )


def _run_counts(codes: jax.Array) -> jax.Array:
  """Cell counts of codes [R, N] by sorting: int32 [R, N] holding the counts of a row's m distinct
  codes (runs of equal sorted codes) in slots 0..m-1, zeros after. Memory O(R·N) whatever the
  code range."""
  s = jnp.sort(codes, axis=-1)
  first = jnp.ones(s.shape[:-1] + (1,), bool)
  is_start = jnp.concatenate([first, s[..., 1:] != s[..., :-1]], axis=-1)
  run = jnp.cumsum(is_start, axis=-1, dtype=jnp.int32) - 1  # run index of every sorted slot
  return _bincount_rows(run, codes.shape[-1])


def _code_entropy(codes: jax.Array, size: int, n: jax.Array, miller_madow: bool,
                  sort: bool) -> jax.Array:
  """Entropy (bits) of integer codes [R, N] in [0, size): sorted runs or a dense bincount."""
  counts = _run_counts(codes) if sort else _bincount_rows(codes, size)
  return _entropy(counts, 1, n, miller_madow)


def _rows(x: jax.Array, shape: tuple[int, ...], rows: jax.Array) -> jax.Array:
  """Rows [C, N] of x [*x_lead, N] broadcast to [*shape, N], at flat indices ``rows`` [C]."""
  flat, stride = jnp.zeros_like(rows), 1
  multi = jnp.unravel_index(rows, shape)
  for d in reversed(range(len(shape))):
    if x.shape[d] != 1:
      flat, stride = flat + multi[d] * stride, stride * x.shape[d]
  return x.reshape(-1, x.shape[-1])[flat]


def _marginal_entropy(code_fn, size: int, parts: tuple[jax.Array, ...], n: jax.Array,
                      miller_madow: bool, sort: bool, chunk_rows: int) -> jax.Array:
  """Entropy of ``code_fn(*parts)`` (codes in [0, size)) on the parts' broadcast leading shape,
  ``chunk_rows`` leading rows at a time (``lax.map``): no full-size code array is formed."""
  shape = tuple(np.broadcast_shapes(*(x.shape[:-1] for x in parts)))
  num_rows, width = math.prod(shape), parts[0].shape[-1]
  entropy = functools.partial(_code_entropy, size=size, n=n, miller_madow=miller_madow,
                              sort=sort)
  if num_rows <= chunk_rows:
    codes = jnp.broadcast_to(code_fn(*parts), shape + (width,)).reshape(-1, width)
    return entropy(codes).reshape(shape)

  def block(first: jax.Array) -> jax.Array:
    rows = jnp.minimum(first + jnp.arange(chunk_rows, dtype=jnp.int32), num_rows - 1)
    return entropy(code_fn(*(_rows(x, shape, rows) for x in parts)))

  starts = jnp.arange(0, num_rows, chunk_rows, dtype=jnp.int32)
  return lax.map(block, starts).reshape(-1)[:num_rows].reshape(shape)


def _measures_sorted(f: jax.Array, l: jax.Array, y: jax.Array, k: int,
                     miller_madow: bool) -> InfoMeasures:
  """InfoMeasures without a K×K×K table: H(F,L,Y) from run lengths of the sorted codes
  (f·K + l)·K + y; marginals with at most N cells by dense bincount (memory ≤ the labels'),
  larger ones by sorting too. Every marginal is computed on its own broadcast leading shape
  (e.g. H(L,Y) once per seed), ``_SORTED_CHUNK_ELEMENTS // N`` leading rows at a time."""
  n = f.shape[-1]
  r = max(f.ndim, l.ndim, y.ndim)
  f, l, y = (x.reshape((1,) * (r - x.ndim) + x.shape) for x in (f, l, y))
  lead = tuple(np.broadcast_shapes(f.shape[:-1], l.shape[:-1], y.shape[:-1]))
  nf = jnp.asarray(n, jnp.float32)
  chunk = max(1, _SORTED_CHUNK_ELEMENTS // n)

  def h(code_fn, size: int, *parts: jax.Array, sort: bool = False) -> jax.Array:
    out = _marginal_entropy(code_fn, size, parts, nf, miller_madow, sort or size > n, chunk)
    return jnp.broadcast_to(out, lead)

  pair = lambda a, b: a * k + b  # noqa: E731
  h_flj = h(lambda a, b, c: pair(pair(a, b), c), k**3, f, l, y, sort=True)
  h_fl, h_fy, h_ly = (h(pair, k * k, a, b) for a, b in ((f, l), (f, y), (l, y)))
  h_f, h_l, h_y = (h(lambda a: a, k, a) for a in (f, l, y))
  acc = lambda a, b: jnp.broadcast_to(  # noqa: E731
      jnp.sum(a == b, axis=-1).astype(jnp.float32) / nf, lead)
  return _from_entropies(h_f, h_l, h_y, h_fl, h_fy, h_ly, h_flj, acc_f=acc(f, y),
                         acc_l=acc(l, y))


def measures_from_table(table: ArrayLike, *, bias_correction: str | None = None) -> InfoMeasures:
  """All :class:`InfoMeasures` from a ``[..., K, K, K]`` count table over (f, l, y).

  ``bias_correction="miller_madow"`` adds (m − 1)/(2N ln 2) bits to every entropy term
  (m = observed non-zero cells of that marginal); default None = plug-in.
  """
  _check_choice("bias_correction", bias_correction, _BIAS_CORRECTIONS)
  shape = np.shape(table)
  if len(shape) < 3 or not shape[-1] == shape[-2] == shape[-3]:
    raise ValueError(f"table must have shape [..., K, K, K], got {shape}.")
  return _measures_from_table(table, bias_correction=bias_correction)


@functools.partial(jax.jit, static_argnames=("num_classes", "bias_correction", "method"))
def _information_measures(f, l, y, num_classes: int, bias_correction: str | None = None,
                          method: str = "auto") -> InfoMeasures:
  f, l, y = (jnp.asarray(x).astype(jnp.int32) for x in (f, l, y))
  if method == "auto":
    lead = tuple(np.broadcast_shapes(f.shape[:-1], l.shape[:-1], y.shape[:-1]))
    ly_shape = np.broadcast_shapes(l.shape, y.shape)
    method = _choose_method(num_classes, f.shape[-1], lead, ly_shape)
  if method == "sorted":
    return _measures_sorted(f, l, y, num_classes, bias_correction == "miller_madow")
  table = _contingency_table(f, l, y, num_classes=num_classes, method=method)
  return _measures_from_table(table, bias_correction=bias_correction)


def information_measures(
    f: ArrayLike,
    l: ArrayLike,
    y: ArrayLike,
    num_classes: int,
    *,
    bias_correction: str | None = None,
    method: str = "auto",
) -> InfoMeasures:
  """I(F;Y), I(F;Y|L), μ_Y(F;L), … (bits) for predictions f, reference l, labels y.

  Labels are integer arrays ``[..., N]`` whose leading dims broadcast; outputs are ``[...]``.
  ``method`` in {"auto", "scatter", "onehot", "sorted"} (module docstring): the table kernels,
  or "sorted" for large K (no K×K×K table); all agree to float32 rounding.
  """
  _check_choice("bias_correction", bias_correction, _BIAS_CORRECTIONS)
  _check_choice("method", method, _METHODS)
  validate(f, l, y, num_classes)
  return _information_measures(f, l, y, num_classes=num_classes,
                               bias_correction=bias_correction, method=method)


def performance_correlation(
    f: ArrayLike, l: ArrayLike, y: ArrayLike, num_classes: int
) -> jax.Array:
  """μ_Y(F;L) = I(F;Y) − I(F;Y|L) in bits."""
  return information_measures(f, l, y, num_classes).mu


def conditional_mutual_information(
    a: ArrayLike, b: ArrayLike, c: ArrayLike, num_classes: int
) -> jax.Array:
  """I(A;B|C) in bits (the table's (F, L, Y) roles are (A, C, B))."""
  validate(a, c, b, num_classes, names=("a", "c", "b"))
  return _information_measures(a, c, b, num_classes=num_classes).i_fy_given_l


@functools.partial(jax.jit, static_argnames=("num_classes",))
def _mutual_information(a, b, num_classes: int) -> jax.Array:
  k = num_classes
  a, b = (jnp.asarray(x).astype(jnp.int32) for x in (a, b))
  lead = tuple(np.broadcast_shapes(a.shape[:-1], b.shape[:-1]))
  idx = jnp.broadcast_to(a * k + b, lead + a.shape[-1:]).reshape(-1, a.shape[-1])
  t = _bincount_rows(idx, k * k).reshape(lead + (k, k))
  n = jnp.full(lead, a.shape[-1], jnp.float32)
  h = functools.partial(_entropy, n=n, miller_madow=False)
  return h(t.sum(-1), 1) + h(t.sum(-2), 1) - h(t, 2)


def mutual_information(a: ArrayLike, b: ArrayLike, num_classes: int) -> jax.Array:
  """I(A;B) in bits for integer labels ``[..., N]`` (leading dims broadcast)."""
  validate(a, b, b, num_classes, names=("a", "b", "b"))
  return _mutual_information(a, b, num_classes=num_classes)


# ----------------------------------------------------------------------------- nulls


def _check_num_permutations(num_permutations: Any) -> int:
  if isinstance(num_permutations, bool) or not isinstance(num_permutations, (int, np.integer)) \
      or num_permutations < 1:
    raise ValueError(f"num_permutations must be a positive int, got {num_permutations!r}.")
  return int(num_permutations)


def permutation_null(
    f: ArrayLike, l: ArrayLike, y: ArrayLike, num_classes: int, key: jax.Array,
    num_permutations: int, *, method: str = "auto",
) -> jax.Array:
  """μ_Y(F;L) with L shuffled over *all* examples: ``[num_permutations, ...]`` draws.

  The null of **marginal independence, L ⟂ (F, Y)**: it breaks L's relation to Y too, so any
  better-than-chance L rejects it, and it cannot tell whether F shares more with L than any two
  classifiers of these accuracies would: that is :func:`conditional_null`'s question.
  ``method`` as in :func:`information_measures`.
  """
  num_permutations = _check_num_permutations(num_permutations)
  _check_choice("method", method, _METHODS)
  validate(f, l, y, num_classes)
  return _null(f, l, y, key, num_classes=num_classes, num_permutations=num_permutations,
               bias_correction=None, within_class=False, method=method)


def within_class_permutation(key: jax.Array, y: jax.Array) -> jax.Array:
  """A uniformly random permutation of the last axis of ``y`` [..., N] that maps every example
  to one of its own class (independently per leading index). int32 [..., N].

  ``a`` sorts positions by class, ``b`` by class then a random key: both list each class in the
  same slots, so ``perm[a[i]] = b[i]`` pairs examples of one class only.
  """
  y = jnp.asarray(y).astype(jnp.int32)
  u = jax.random.uniform(key, y.shape)
  a = jnp.argsort(y, axis=-1, stable=True)
  b = jnp.lexsort((u, y), axis=-1)  # by class, then by a random key
  # perm[a] = b, i.e. perm = b[a⁻¹]
  return jnp.take_along_axis(b, jnp.argsort(a, axis=-1), axis=-1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("num_classes", "num_permutations",
                                             "bias_correction", "within_class", "method"))
def _null(f, l, y, key, num_classes: int, num_permutations: int, bias_correction: str | None,
          within_class: bool = True, method: str = "auto") -> jax.Array:
  f, l, y = (jnp.asarray(x).astype(jnp.int32) for x in (f, l, y))
  n = l.shape[-1]
  # One permutation per leading index of (l, y) broadcast: draws are independent across seeds.
  ly_lead = tuple(np.broadcast_shapes(l.shape[:-1], y.shape[:-1]))
  l_b = jnp.broadcast_to(l, ly_lead + (n,))
  y_b = jnp.broadcast_to(y, ly_lead + (n,))

  def one(k):  # a within-class permutation of one class is a plain shuffle
    perm = within_class_permutation(k, y_b if within_class else jnp.zeros_like(y_b))
    l_perm = jnp.take_along_axis(l_b, perm, axis=-1)
    return _information_measures(f, l_perm, y_b, num_classes=num_classes,
                                 bias_correction=bias_correction, method=method).mu

  # lax.map: one draw at a time, so memory stays at one call's worth ([..., K³] tables, or
  # "sorted"'s chunks), never [P, ..., N].
  return lax.map(one, jax.random.split(key, num_permutations))


def conditional_null(
    f: ArrayLike, l: ArrayLike, y: ArrayLike, num_classes: int, key: jax.Array,
    num_permutations: int, bias_correction: str | None = None, *, method: str = "auto",
) -> jax.Array:
  """μ_Y(F;L) under **conditional independence F ⟂ L | Y**: ``[num_permutations, ...]`` draws.

  Each draw permutes L's predictions *within each class of Y* (:func:`within_class_permutation`,
  a fresh permutation per leading index of (l, y)): acc(L), I(L;Y) and the (F, Y) pairing are
  kept, any F–L dependence beyond Y is broken. Under F ⟂ L | Y, μ = I(F;L) > 0 for any two
  accurate classifiers: this is the baseline a measured μ_Y(F;L) must beat. Same broadcasting as
  :func:`information_measures`, jit-able, the same ``bias_correction`` as the μ it is compared
  with, and one draw at a time (``lax.map``): no ``[P, ..., N]`` array is formed. ``method``
  as in :func:`information_measures` ("auto" decides on one draw's shapes).
  """
  num_permutations = _check_num_permutations(num_permutations)
  _check_choice("bias_correction", bias_correction, _BIAS_CORRECTIONS)
  _check_choice("method", method, _METHODS)
  validate(f, l, y, num_classes)
  return _null(f, l, y, key, num_classes=num_classes, num_permutations=num_permutations,
               bias_correction=bias_correction, method=method)
