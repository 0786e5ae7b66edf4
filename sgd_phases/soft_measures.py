"""Soft measures: F's predictive distribution against each reference's, in bits per example.

    pf = ...                                  # [S, E, N, K] F's probabilities (seeds, evaluations)
    m = soft_measures.divergences(pf, p_ref, y)            # {"kl_ref_f", "kl_f_ref", "js"}: [S, E]
    ce = soft_measures.cross_entropy(pf, y)                # [S, E]
    fit = soft_measures.mixture(pf, [p_unigram, p_bigram])  # weights [S, E, 3] (last: uniform)

The paper's μ uses hard predictions; the literature that asks the same question of predictive
distributions (Edelman et al. 2024: KL to each in-context strategy; Belrose et al. 2024: KL/JS
to n-gram distributions; Park et al. 2025: the model as a convex combination of candidate
algorithms) measures these. Every function is jitted, batched over the leading [S, E] axes and
returns bits per example (means over the N test examples):

* ``kl_ref_f`` = mean_n KL(p_ref || p_F), ``kl_f_ref`` = mean_n KL(p_F || p_ref),
  ``js`` = mean_n JS(p_ref, p_F) (in [0, 1] bits), ``cross_entropy`` = mean_n −log2 p(y_n);
  with ``num_positions`` = P (sequence data, examples in sequence-major order n = m·P + t) also
  the same per position t, averaged over the sequences: [S, E, P].
* :func:`mixture`: per seed and evaluation, the convex weights w over the given distributions
  and the uniform one minimising mean_n KL(p_F || Σ_r w_r p_r), and that residual KL.

References: ``p_ref`` is [N, K] (one for every seed: a closed-form predictor), [S, N, K] (one
per seed: a trained reference, F at T_0) or [S, E, N, K] (time-paired). Which distribution
each reference has: closed-form sequence predictors the smoothed ones of
:mod:`sgd_phases.sequence_distributions` (documented there); trained references (linear,
shallower networks, F at T_0) and F itself their softmax (for a network trained with the
squared loss, the softmax of its outputs: a convention, not its training objective).

Numerics: inputs are cast to float32 and each row renormalised to sum 1 (a float16 buffer's
rows are off by up to ~K·5e-4). 0·log 0 = 0: a term whose first argument is 0 counts 0.
A probability that enters a logarithm is clipped below at ``floor``: 2⁻²⁴ ≈ 6e-8 for float16
inputs (the smallest positive float16: a float16 zero is "below 6e-8", not 0) and 1e-30 for
float32 (only a softmax that underflowed gives less), so one example's term log2(p/q) is at
most 24 (float16) or 100 (float32) bits and a KL is a lower bound where F rounds a probability
the reference gives mass to down to 0. KL of identical inputs is exactly 0.

The mixture fit is a projected Newton method on the simplex (the objective is convex in w):
each step minimises the second-order model exactly over the simplex (every face's
equality-constrained minimiser, one batched KKT solve, the best feasible one), then backtracks
to a sufficient decrease; it stops when a step gains less than ``TOLERANCE`` nats or after
``NEWTON_STEPS`` steps; rows of [S, E] are fitted ``ROWS_PER_BATCH`` at a time, vmapped. Weights of
distributions that (nearly) coincide on the test set are not identified (only their sum is);
the residual KL is.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

LN2 = float(np.log(2.0))
FLOOR_FLOAT16 = 2.0**-24
FLOOR_FLOAT32 = 1e-30
ROWS_PER_BATCH = 8      # (seed, evaluation) rows evaluated together (bounds the temporaries)
NEWTON_STEPS = 50       # at most this many projected Newton steps per mixture fit ...
TOLERANCE = 1e-9        # ... stopping once a step gains less than this (nats)
LINE_SEARCH = 20        # backtracking halves the step at most this many times
MAX_COMPONENTS = 12     # the exact simplex QP solves 2^R - 1 small systems per step


def floor_for(dtype) -> float:
  """The clipping floor of probabilities stored as ``dtype`` (module doc)."""
  return FLOOR_FLOAT16 if jnp.dtype(dtype) == jnp.float16 else FLOOR_FLOAT32


def _normalized(p: jax.Array) -> jax.Array:
  p = jnp.maximum(p.astype(jnp.float32), 0.0)
  return p / jnp.sum(p, axis=-1, keepdims=True)


def _kl(p: jax.Array, q: jax.Array, floor: float) -> jax.Array:
  """KL(p || q) in nats over the last axis; 0·log 0 = 0, both clipped at ``floor``."""
  lp, lq = jnp.log(jnp.maximum(p, floor)), jnp.log(jnp.maximum(q, floor))
  return jnp.sum(jnp.where(p > 0, p * (lp - lq), 0.0), axis=-1)


def _per_position(x: jax.Array, num_positions: int) -> jax.Array:
  """[..., N] -> [..., P]: means over the sequences (n = m·P + t)."""
  return jnp.mean(x.reshape(x.shape[:-1] + (-1, num_positions)), axis=-2)


def _as_4d(p: jax.Array, s: int, e: int, name: str) -> jax.Array:
  """A reference's distributions as [1 or S, 1 or E, N, K]."""
  if p.ndim == 2:
    return p[None, None]
  if p.ndim == 3 and p.shape[0] == s:
    return p[:, None]
  if p.ndim == 4 and p.shape[:2] == (s, e):
    return p
  raise ValueError(f"{name}: shape {p.shape} must be [N, K], [S={s}, N, K] or "
                   f"[S={s}, E={e}, N, K]")


def _over_rows(fn, pf: jax.Array, refs: Sequence[jax.Array]):
  """``fn(pf_row [N, K], [ref_row [N, K], ...])`` over every (seed, evaluation) row of ``pf``
  [S, E, N, K], ``ROWS_PER_BATCH`` rows at a time; outputs get leading [S, E] axes."""
  s, e = pf.shape[:2]
  refs = [_as_4d(r, s, e, f"distribution {i}") for i, r in enumerate(refs)]
  idx = jnp.arange(s * e)

  def one(args):
    i, row = args  # each reference's row for this (seed, evaluation); broadcast axes: 0
    rows = [r[jnp.minimum(i // e, r.shape[0] - 1), jnp.minimum(i % e, r.shape[1] - 1)]
            for r in refs]
    return fn(_normalized(row), [_normalized(r) for r in rows])

  out = jax.lax.map(one, (idx, pf.reshape((s * e,) + pf.shape[2:])),
                    batch_size=min(ROWS_PER_BATCH, s * e))
  return jax.tree.map(lambda x: x.reshape((s, e) + x.shape[1:]), out)


@functools.partial(jax.jit, static_argnames=("num_positions", "floor"))
def divergences(pf: jax.Array, p_ref: jax.Array, *, num_positions: int | None = None,
                floor: float = FLOOR_FLOAT32) -> dict[str, jax.Array]:
  """``kl_ref_f``, ``kl_f_ref``, ``js`` [S, E] in bits (module doc) of F's ``pf`` [S, E, N, K]
  against one reference ``p_ref``; with ``num_positions`` also ``position/<field>`` [S, E, P]."""

  def fn(f, rows):
    r = rows[0]
    m = 0.5 * (f + r)
    per = {"kl_ref_f": _kl(r, f, floor), "kl_f_ref": _kl(f, r, floor),
           "js": 0.5 * (_kl(r, m, floor) + _kl(f, m, floor))}
    out = {k: jnp.mean(v) / LN2 for k, v in per.items()}
    if num_positions:
      out.update({f"position/{k}": _per_position(v, num_positions) / LN2
                  for k, v in per.items()})
    return out

  return _over_rows(fn, pf, [p_ref])


@functools.partial(jax.jit, static_argnames=("num_positions", "floor"))
def cross_entropy(p: jax.Array, y: jax.Array, *, num_positions: int | None = None,
                  floor: float = FLOOR_FLOAT32) -> dict[str, jax.Array]:
  """``ce`` = mean_n −log2 p[n, y_n] over the last two axes of ``p`` [..., N, K] (any leading
  axes) against labels ``y`` [N]; with ``num_positions`` also ``position/ce`` [..., P]."""
  py = jnp.take_along_axis(_normalized(p), jnp.broadcast_to(
      y.astype(jnp.int32)[:, None], p.shape[:-1] + (1,)), axis=-1)[..., 0]
  nll = -jnp.log(jnp.maximum(py, floor)) / LN2
  out = {"ce": jnp.mean(nll, axis=-1)}
  if num_positions:
    out["position/ce"] = _per_position(nll, num_positions)
  return out


# ------------------------------------------------------------------------------- mixture
def _faces(r: int) -> np.ndarray:
  """float32 [2^r - 1, r]: the indicator of every non-empty face (support) of the simplex."""
  codes = np.arange(1, 2**r)
  return ((codes[:, None] >> np.arange(r)[None, :]) & 1).astype(np.float32)


def _simplex_qp(c: jax.Array, h: jax.Array) -> jax.Array:
  """argmin over the simplex of cᵀv + ½vᵀhv (h positive semi-definite), exactly.

  The minimiser lies in the relative interior of one face, where it is the minimiser over that
  face's affine hull: every face's equality-constrained minimiser is solved (one batched KKT
  system each), and the best one with v >= 0 is taken (the vertices are always feasible).
  """
  r = c.shape[0]
  m = jnp.asarray(_faces(r))                               # [F, r]
  ridge = 1e-6 * jnp.maximum(jnp.mean(jnp.diag(h)), 1e-12)  # identical components: singular h
  hm = m[:, :, None] * m[:, None, :] * (h + ridge * jnp.eye(r))[None]
  kkt = jnp.zeros((m.shape[0], r + 1, r + 1), h.dtype)
  kkt = kkt.at[:, :r, :r].set(hm + jax.vmap(jnp.diag)(1.0 - m))
  kkt = kkt.at[:, :r, r].set(m).at[:, r, :r].set(m)
  rhs = jnp.concatenate([-c[None] * m, jnp.ones((m.shape[0], 1), h.dtype)], axis=1)
  v = jnp.linalg.solve(kkt, rhs[..., None])[..., :r, 0] * m
  value = v @ c + 0.5 * jnp.einsum("fr,rs,fs->f", v, h, v)
  ok = jnp.all(v >= -1e-7, axis=1) & jnp.all(jnp.isfinite(v), axis=1)
  best = jnp.argmin(jnp.where(ok, value, jnp.inf))
  v = jnp.maximum(v[best], 0.0)
  return v / jnp.sum(v)


def _fit_row(f: jax.Array, comps: jax.Array, floor: float) -> tuple[jax.Array, jax.Array]:
  """Weights [R] over ``comps`` [R, N, K] minimising mean_n KL(f || Σ w_r comps_r), and that
  KL in bits."""
  r, n = comps.shape[0], f.shape[0]
  pos = f > 0
  flogf = jnp.sum(jnp.where(pos, f * jnp.log(jnp.maximum(f, floor)), 0.0)) / n

  def objective(q):  # mean_n KL(f || q) in nats
    return flogf - jnp.sum(jnp.where(pos, f * jnp.log(jnp.maximum(q, floor)), 0.0)) / n

  def newton(carry):
    w, value, _, it = carry
    q = jnp.maximum(jnp.einsum("r,rnk->nk", w, comps), floor)
    a = comps * (jnp.sqrt(f) / q)[None]                   # [R, N, K]
    g = -jnp.einsum("rnk,nk->r", comps, f / q) / n
    h = jnp.einsum("rnk,snk->rs", a, a) / n
    d = _simplex_qp(g - h @ w, h) - w
    qd = jnp.einsum("r,rnk->nk", d, comps)                # q is linear in w

    def shorter(ts):
      return ts[0] * 0.5, objective(q + ts[0] * 0.5 * qd)

    def too_long(ts):  # Armijo: a quarter of the predicted decrease
      return (ts[1] > value + 0.25 * ts[0] * jnp.dot(g, d)) & (ts[0] > 2.0**-LINE_SEARCH)

    t, new = jax.lax.while_loop(too_long, shorter, (jnp.float32(1.0), objective(q + qd)))
    take = new < value
    w_new = jnp.where(take, w + t * d, w)
    return (w_new / jnp.sum(w_new), jnp.where(take, new, value), value - jnp.where(
        take, new, value), it + 1)

  def going(carry):
    _, _, gain, it = carry
    return (it < NEWTON_STEPS) & (gain > TOLERANCE)

  w0 = jnp.full((r,), 1.0 / r, jnp.float32)
  q0 = jnp.einsum("r,rnk->nk", w0, comps)
  w, value, _, _ = jax.lax.while_loop(going, newton, (w0, objective(q0), jnp.float32(jnp.inf),
                                                      jnp.int32(0)))
  return w, value / LN2


@functools.partial(jax.jit, static_argnames=("floor",))
def mixture(pf: jax.Array, components: Sequence[jax.Array], *, floor: float = FLOOR_FLOAT32
            ) -> dict[str, jax.Array]:
  """F's ``pf`` [S, E, N, K] as a convex combination of ``components`` (each [N, K], [S, N, K]
  or [S, E, N, K]) and the uniform distribution: ``weights`` [S, E, R + 1] (the uniform one
  last) minimising mean_n KL(p_F || Σ_r w_r p_r), and ``residual_kl`` [S, E] in bits."""

  if len(components) + 1 > MAX_COMPONENTS:
    raise ValueError(f"components: {len(components)} distributions (+ uniform) exceed the "
                     f"{MAX_COMPONENTS} the mixture fit takes")

  def fn(f, rows):
    comps = jnp.stack(rows + [jnp.full_like(f, 1.0 / f.shape[-1])])
    w, res = _fit_row(f, comps, floor)
    return {"weights": w, "residual_kl": res}

  return _over_rows(fn, pf, list(components))
