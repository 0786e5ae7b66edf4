"""Counting kernels of :mod:`sgd_phases.mutual_info`: from hard labels (f, l, y) to the
entropies of F, L, Y and their joints, through the K×K×K contingency table (a scatter-add or
one-hots) or, for large K, from sorted codes without that table; and which kernel
``method="auto"`` picks. ``mutual_info`` checks the inputs and builds every measure on these
entropies (:class:`Entropies`).

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
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.scipy.special import xlogy

_LN2 = math.log(2.0)
METHODS = ("auto", "scatter", "onehot", "sorted")
TABLE_METHODS = ("auto", "scatter", "onehot")  # "sorted" builds no K×K×K table
_CPU_ONEHOT_MAX_K = 4  # measured crossover vs scatter (benchmarks/results/mi_kernel_methods_cpu.md)
_CPU_ONEHOT_MIN_SHARE = 8  # unshared one-hot was 2-10x slower than scatter (same file).
_ACCEL_ONEHOT_MAX_K = 8  # unmeasured heuristic for GPU/TPU.
_ACCEL_ONEHOT_MAX_BYTES = 1 << 30
_SORTED_MIN_K = 32  # below, a table is < 128 KiB per pair: never worth a sort.
_SORTED_MIN_CELLS_PER_EXAMPLE = 16  # sorted when K³ >= 16 N: measured crossover 10-20 N.
_SORTED_MAX_TABLE_BYTES = 1 << 30  # sorted when the dense tables of one call exceed 1 GiB.
SORTED_CHUNK_ELEMENTS = 1 << 20  # "sorted" sorts at most this many codes at once (4 MiB)


class Entropies(NamedTuple):
  """Entropies in bits of F, L, Y and their joints, and the accuracies of F and L, each
  ``[...]``: what every measure of ``mutual_info`` is built from."""

  h_f: jax.Array
  h_l: jax.Array
  h_y: jax.Array
  h_fl: jax.Array
  h_fy: jax.Array
  h_ly: jax.Array
  h_flj: jax.Array  # H(F, L, Y)
  acc_f: jax.Array  # P[F = Y]
  acc_l: jax.Array  # P[L = Y]


# ----------------------------------------------------------------------------- tables


def bincount_rows(idx: jax.Array, length: int) -> jax.Array:
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
  return bincount_rows(idx, k**3).reshape(lead + (k, k, k))


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


def choose_method(k: int, n: int, lead: tuple[int, ...], ly_shape: tuple[int, ...],
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
  return choose_method(num_classes, n, tuple(lead), tuple(ly_shape), table)


@functools.partial(jax.jit, static_argnames=("num_classes", "method"))
def contingency_counts(f, l, y, num_classes: int, method: str = "auto") -> jax.Array:
  k = num_classes
  f, l, y = (jnp.asarray(x).astype(jnp.int32) for x in (f, l, y))
  lead = tuple(np.broadcast_shapes(f.shape[:-1], l.shape[:-1], y.shape[:-1]))
  ly = l * k + y
  r = len(lead) + 1
  f = f.reshape((1,) * (r - f.ndim) + f.shape)
  ly = ly.reshape((1,) * (r - ly.ndim) + ly.shape)
  if method == "auto":
    method = choose_method(k, f.shape[-1], lead, ly.shape, table=True)
  if method == "onehot" and (jax.default_backend() == "cpu" or f.shape[-1] < 2**24):
    return _table_onehot(f, ly, k, lead)
  return _table_scatter(f, ly, k, lead)


# ----------------------------------------------------------------------------- entropies


def entropy(counts: jax.Array, ndim: int, n: jax.Array, miller_madow: bool) -> jax.Array:
  """Entropy in bits of the last ``ndim`` axes of ``counts`` (int32); ``n`` = total."""
  c = counts.reshape(counts.shape[: counts.ndim - ndim] + (-1,))
  p = c.astype(jnp.float32) / n[..., None]
  h = -jnp.sum(xlogy(p, p), axis=-1) / _LN2
  if miller_madow:  # (m - 1) / (2 N ln 2) with m = observed non-zero cells.
    m = jnp.sum(c > 0, axis=-1).astype(jnp.float32)
    h = h + (m - 1.0) / (2.0 * n * _LN2)
  return h


def table_entropies(table: jax.Array, miller_madow: bool) -> Entropies:
  """:class:`Entropies` of a ``[..., K, K, K]`` count table over (f, l, y) (Miller–Madow terms
  added when ``miller_madow``)."""
  t = jnp.asarray(table).astype(jnp.int32)
  t_fl, t_fy, t_ly = t.sum(-1), t.sum(-2), t.sum(-3)
  t_f, t_l, t_y = t_fl.sum(-1), t_fl.sum(-2), t_ly.sum(-2)
  n = t_f.sum(-1).astype(jnp.float32)
  h = functools.partial(entropy, n=n, miller_madow=miller_madow)
  h_flj, h_fl, h_fy, h_ly = h(t, 3), h(t_fl, 2), h(t_fy, 2), h(t_ly, 2)
  h_f, h_l, h_y = h(t_f, 1), h(t_l, 1), h(t_y, 1)
  return Entropies(h_f, h_l, h_y, h_fl, h_fy, h_ly, h_flj,
                   acc_f=jnp.trace(t_fy, axis1=-2, axis2=-1).astype(jnp.float32) / n,
                   acc_l=jnp.trace(t_ly, axis1=-2, axis2=-1).astype(jnp.float32) / n)


def _run_counts(codes: jax.Array) -> jax.Array:
  """Cell counts of codes [R, N] by sorting: int32 [R, N] holding the counts of a row's m distinct
  codes (runs of equal sorted codes) in slots 0..m-1, zeros after. Memory O(R·N) whatever the
  code range."""
  s = jnp.sort(codes, axis=-1)
  first = jnp.ones(s.shape[:-1] + (1,), bool)
  is_start = jnp.concatenate([first, s[..., 1:] != s[..., :-1]], axis=-1)
  run = jnp.cumsum(is_start, axis=-1, dtype=jnp.int32) - 1  # run index of every sorted slot
  return bincount_rows(run, codes.shape[-1])


def _code_entropy(codes: jax.Array, size: int, n: jax.Array, miller_madow: bool,
                  sort: bool) -> jax.Array:
  """Entropy (bits) of integer codes [R, N] in [0, size): sorted runs or a dense bincount."""
  counts = _run_counts(codes) if sort else bincount_rows(codes, size)
  return entropy(counts, 1, n, miller_madow)


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
  h = functools.partial(_code_entropy, size=size, n=n, miller_madow=miller_madow, sort=sort)
  if num_rows <= chunk_rows:
    codes = jnp.broadcast_to(code_fn(*parts), shape + (width,)).reshape(-1, width)
    return h(codes).reshape(shape)

  def block(first: jax.Array) -> jax.Array:
    rows = jnp.minimum(first + jnp.arange(chunk_rows, dtype=jnp.int32), num_rows - 1)
    return h(code_fn(*(_rows(x, shape, rows) for x in parts)))

  starts = jnp.arange(0, num_rows, chunk_rows, dtype=jnp.int32)
  return lax.map(block, starts).reshape(-1)[:num_rows].reshape(shape)


def sorted_entropies(f: jax.Array, l: jax.Array, y: jax.Array, k: int,
                     miller_madow: bool) -> Entropies:
  """:class:`Entropies` without a K×K×K table: H(F,L,Y) from run lengths of the sorted codes
  (f·K + l)·K + y; marginals with at most N cells by dense bincount (memory ≤ the labels'),
  larger ones by sorting too. Every marginal is computed on its own broadcast leading shape
  (e.g. H(L,Y) once per seed), ``SORTED_CHUNK_ELEMENTS // N`` leading rows at a time."""
  n = f.shape[-1]
  r = max(f.ndim, l.ndim, y.ndim)
  f, l, y = (x.reshape((1,) * (r - x.ndim) + x.shape) for x in (f, l, y))
  lead = tuple(np.broadcast_shapes(f.shape[:-1], l.shape[:-1], y.shape[:-1]))
  nf = jnp.asarray(n, jnp.float32)
  chunk = max(1, SORTED_CHUNK_ELEMENTS // n)

  def h(code_fn, size: int, *parts: jax.Array, sort: bool = False) -> jax.Array:
    out = _marginal_entropy(code_fn, size, parts, nf, miller_madow, sort or size > n, chunk)
    return jnp.broadcast_to(out, lead)

  pair = lambda a, b: a * k + b  # noqa: E731
  h_flj = h(lambda a, b, c: pair(pair(a, b), c), k**3, f, l, y, sort=True)
  h_fl, h_fy, h_ly = (h(pair, k * k, a, b) for a, b in ((f, l), (f, y), (l, y)))
  h_f, h_l, h_y = (h(lambda a: a, k, a) for a in (f, l, y))
  acc = lambda a, b: jnp.broadcast_to(  # noqa: E731
      jnp.sum(a == b, axis=-1).astype(jnp.float32) / nf, lead)
  return Entropies(h_f, h_l, h_y, h_fl, h_fy, h_ly, h_flj, acc_f=acc(f, y), acc_l=acc(l, y))
