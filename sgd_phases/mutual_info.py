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

Counting (``method``): the K×K×K table by a scatter-add or by one-hots, or, for large K
(e.g. K = vocabulary size), ``"sorted"``, entropies from sorted codes without that table (measures
only: :func:`information_measures`, the nulls, :func:`conditional_mutual_information`; not
:func:`contingency_table`). All agree to float32 rounding; ``"auto"`` picks per backend and
shape (``resolve_method``). The kernels, and the measurements behind that rule, are in
:mod:`sgd_phases.mi_counts`; this module checks the inputs and builds every measure on their
entropies.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from sgd_phases import mi_counts

ArrayLike = Any
_BIAS_CORRECTIONS = (None, "miller_madow")
resolve_method = mi_counts.resolve_method  # what method="auto" becomes (recorded with a run)


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
  concrete = {n: x for n, x in arrays.items() if not _is_tracer(x)}
  on_host = {n: (np.min(x), np.max(x)) for n, x in concrete.items() if isinstance(x, np.ndarray)}
  on_device = {n: x for n, x in concrete.items() if n not in on_host}
  ranges = {**on_host, **(jax.device_get(_ranges(on_device)) if on_device else {})}
  for name in concrete:
    lo, hi = (int(v) for v in ranges[name])
    if lo < 0 or hi >= num_classes:
      raise ValueError(
          f"{name} has labels in [{lo}, {hi}], outside [0, num_classes={num_classes}).")
  return tuple(lead)


@jax.jit
def _ranges(arrays: dict[str, jax.Array]) -> dict[str, tuple[jax.Array, jax.Array]]:
  """(min, max) of every device array, one program (not two eager reductions each)."""
  return {n: (jnp.min(x), jnp.max(x)) for n, x in arrays.items()}


# ----------------------------------------------------------------------------- the table


def contingency_table(
    f: ArrayLike, l: ArrayLike, y: ArrayLike, num_classes: int, *, method: str = "auto"
) -> jax.Array:
  """int32 counts ``[..., K, K, K]`` over (f, l, y); labels ``[..., N]``, leading dims broadcast.

  ``method`` in {"auto", "scatter", "onehot"} picks the kernel (module docstring); all give
  identical counts. ("sorted" is not accepted here: it exists to never build this table.)
  """
  _check_choice("method", method, mi_counts.TABLE_METHODS)
  validate(f, l, y, num_classes)
  return mi_counts.contingency_counts(f, l, y, num_classes=num_classes, method=method)


# ----------------------------------------------------------------------------- measures


@functools.partial(jax.jit, static_argnames=("bias_correction",))
def _measures_from_table(table: jax.Array, bias_correction: str | None = None) -> InfoMeasures:
  return _from_entropies(*mi_counts.table_entropies(table, bias_correction == "miller_madow"))


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


def _measures_sorted(f: jax.Array, l: jax.Array, y: jax.Array, k: int,
                     miller_madow: bool) -> InfoMeasures:
  """InfoMeasures without a K×K×K table (``mi_counts.sorted_entropies``)."""
  return _from_entropies(*mi_counts.sorted_entropies(f, l, y, k, miller_madow))


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
    method = mi_counts.choose_method(num_classes, f.shape[-1], lead, ly_shape)
  if method == "sorted":
    return _measures_sorted(f, l, y, num_classes, bias_correction == "miller_madow")
  table = mi_counts.contingency_counts(f, l, y, num_classes=num_classes, method=method)
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
  _check_choice("method", method, mi_counts.METHODS)
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
  t = mi_counts.bincount_rows(idx, k * k).reshape(lead + (k, k))
  n = jnp.full(lead, a.shape[-1], jnp.float32)
  h = functools.partial(mi_counts.entropy, n=n, miller_madow=False)
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
  _check_choice("method", method, mi_counts.METHODS)
  validate(f, l, y, num_classes)
  return _null(f, l, y, key, num_classes=num_classes, num_permutations=num_permutations,
               bias_correction=None, within_class=False, method=method)


def within_class_permutation(key: jax.Array, y: jax.Array) -> jax.Array:
  """A uniformly random permutation of the last axis of ``y`` [..., N] that maps every example
  to one of its own class (independently per leading index). int32 [..., N].

  ``a`` sorts positions by class, ``b`` by class then a random key: both list each class in the
  same slots, so ``perm[a[i]] = b[i]`` pairs examples of one class only.
  """
  return _within_class_permutation(key, y)


# Classes below this count sort one packed uint32 key (class, u's 23 random bits) instead of
# the two keys (class, u): the same stable order, ~1.45x faster on XLA:CPU (where the null's
# sorts dominate its cost: benchmarks/sequence_throughput.py).
_PACKED_SORT_MAX_CLASSES = 2**9


# Up to this many examples (and on CPU) the packed key's stable argsort is two sorts of lone
# uint32 operands (stable_argsort_u32): XLA:CPU sorts (key, index) pairs ~5x slower than one
# operand; the same order, so the same draws (the sort 1.9x, the null 1.4-1.6x faster:
# benchmarks/sequence_throughput.py's null_mu stage).
_FAST_ARGSORT_MAX_N = 2**16


def stable_argsort_u32(keys: jax.Array) -> jax.Array:
  """``jnp.argsort(keys, axis=-1, stable=True)`` of uint32 keys [..., N], N <= 2^16, as two
  single-operand sorts: r_i = #{j: k_j < k_i} (a binary search in the sorted keys), then the
  sorted (r_i << 16 | i) list the indices by (key, index). int32 [..., N]."""
  n = keys.shape[-1]
  if n > _FAST_ARGSORT_MAX_N:
    raise ValueError(f"stable_argsort_u32: {n} keys, at most {_FAST_ARGSORT_MAX_N}")
  flat = keys.reshape(-1, n)
  rank = jax.vmap(lambda srt, q: jnp.searchsorted(srt, q, side="left"))(
      jnp.sort(flat, axis=-1), flat)
  packed = (rank.astype(jnp.uint32) << 16) | jnp.arange(n, dtype=jnp.uint32)
  return (jnp.sort(packed, axis=-1) & 0xFFFF).astype(jnp.int32).reshape(keys.shape)


def _within_class_permutation(key: jax.Array, y: jax.Array, num_classes: int | None = None
                              ) -> jax.Array:
  y = jnp.asarray(y).astype(jnp.int32)
  u = jax.random.uniform(key, y.shape)  # = m / 2^23, m in [0, 2^23) (exact in float32)
  a = jnp.argsort(y, axis=-1, stable=True)
  if num_classes is not None and num_classes <= _PACKED_SORT_MAX_CLASSES:
    m = (u * (1 << 23)).astype(jnp.uint32)
    packed = (y.astype(jnp.uint32) << 23) | m
    if y.shape[-1] <= _FAST_ARGSORT_MAX_N and jax.default_backend() == "cpu":
      b = stable_argsort_u32(packed)
    else:
      b = jnp.argsort(packed, axis=-1, stable=True)
  else:
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
    perm = _within_class_permutation(k, y_b if within_class else jnp.zeros_like(y_b),
                                     num_classes)
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
  _check_choice("method", method, mi_counts.METHODS)
  validate(f, l, y, num_classes)
  return _null(f, l, y, key, num_classes=num_classes, num_permutations=num_permutations,
               bias_correction=bias_correction, method=method)
