"""Training sequences sampled on device, inside the compiled training step (jax).

The synthetic sequence tasks (``icl_markov``, ``markov_source``; numpy generators in
:mod:`sgd_phases.datasets.sequences`) are infinite: with ``train_sampling="device"`` (their
default) every SGD step draws a fresh batch from the step's own key, so memory does not grow
with the number of steps, a resumed run draws exactly the batches it would have drawn, and a
seed draws the same batches alone or beside others (its key is ``fold_in(data_key, step)``).

    sampler = sequence_sampling.Sampler("icl_markov", k=3, length=100, alpha=1.0)
    x, y = sampler.batch(jax.random.key(0), 64, sampler.arrays())  # int32 [64, 99] each
    # x = tokens[:, :-1], y = tokens[:, 1:] (next-token prediction)

Same distributions as the numpy generators (tested by their statistics, not bit for bit):

* ``icl_markov``: per sequence, transition rows ~ Dirichlet(alpha 1_k), x_0 ~ the chain's
  stationary distribution, x_{t+1} ~ P[x_t].
* ``markov_source``: one fixed order-n table (``arrays()`` hands it to the program as an
  argument, never as a compiled-in constant); the first n tokens uniform, then
  x_t ~ table[x_{t-n}, ..., x_{t-1}].
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

KINDS = ("icl_markov", "markov_source")
_LAZY_SQUARINGS = 64  # the stationary fallback: ((P + I) / 2) ** (2 ** 64)


@dataclasses.dataclass(frozen=True, eq=False)  # a static jit argument: hashed by _program
class Sampler:
  """Fresh training batches of one synthetic sequence task.

  Attributes:
    kind: "icl_markov" or "markov_source".
    k: vocabulary size (states).
    length: T, tokens per sequence (a batch holds T - 1 positions).
    alpha: Dirichlet concentration of every transition row (icl_markov).
    table: the order-n source's transition table ``[k] * n + [k]`` (markov_source).
  """
  kind: str
  k: int
  length: int
  alpha: float = 1.0
  table: np.ndarray | None = None

  def __post_init__(self) -> None:
    if self.kind not in KINDS:
      raise ValueError(f"kind={self.kind!r} must be one of {KINDS}")
    if (self.kind == "markov_source") != (self.table is not None):
      raise ValueError("table: markov_source needs its transition table, icl_markov none")

  def _program(self) -> tuple[Any, ...]:
    """What the compiled sampling code depends on (the table's values are an argument)."""
    return (type(self), self.kind, self.k, self.length, float(self.alpha),
            None if self.table is None else np.shape(self.table))

  def __eq__(self, other: object) -> bool:
    return isinstance(other, Sampler) and self._program() == other._program()

  def __hash__(self) -> int:
    return hash(self._program())

  @property
  def order(self) -> int:
    return 1 if self.table is None else self.table.ndim - 1

  def arrays(self) -> dict[str, np.ndarray]:
    """What the compiled program reads (argument, not constant): markov_source's CDF table."""
    if self.table is None:
      return {}
    cdf = np.cumsum(np.asarray(self.table, np.float64).reshape(-1, self.k), axis=-1)
    return {"cdf": cdf.astype(np.float32)}

  def tokens(self, key: jax.Array, batch: int, arrays: dict[str, jax.Array]) -> jax.Array:
    """int32 [batch, T] fresh sequences."""
    if self.kind == "icl_markov":
      return icl_markov(key, batch, self.length, self.k, self.alpha)
    return markov_source(key, batch, self.length, arrays["cdf"], self.k, self.order)

  def batch(self, key: jax.Array, batch: int, arrays: dict[str, jax.Array]
            ) -> tuple[jax.Array, jax.Array]:
    """(inputs, targets) = (tokens[:, :-1], tokens[:, 1:]), int32 [batch, T - 1] each."""
    tok = self.tokens(key, batch, arrays)
    return tok[:, :-1], tok[:, 1:]


def inverse_cdf(cdf: jax.Array, u: jax.Array) -> jax.Array:
  """int32 [...]: the first j with cdf[..., j] > u (the last one if rounding leaves
  cdf[..., -1] below u)."""
  idx = jnp.sum(u[..., None] >= cdf, axis=-1)
  return jnp.minimum(idx, cdf.shape[-1] - 1).astype(jnp.int32)


def walk(u: jax.Array, state: jax.Array, cdf: jax.Array, k: int) -> jax.Array:
  """int32 [B, L]: L tokens of B order-n chains driven by uniforms ``u`` [L, B].

  ``state`` [B]: each chain's context, the base-k code of its last n tokens (oldest first);
  ``cdf`` [B, S, k] (one table per chain) or [S, k] (shared), S = k**n contexts. Token t is
  drawn from the context's row, then the context shifts: (state·k + token) mod S.
  """
  num_states = cdf.shape[-2]
  rows = jnp.arange(state.shape[0])

  def step(s, u_t):
    tok = inverse_cdf(cdf[rows, s] if cdf.ndim == 3 else cdf[s], u_t)
    return (s * k + tok) % num_states, tok

  _, toks = jax.lax.scan(step, state.astype(jnp.int32), u)
  return toks.T


def stationary(p: jax.Array) -> jax.Array:
  """[..., k]: a stationary distribution (pi P = pi, sum 1) of row-stochastic [..., k, k].

  Solves (P^T - I) pi = 0 with one equation replaced by sum(pi) = 1; where that fails (a
  reducible chain, possible only when Dirichlet draws underflow to exact zeros), powers of the
  lazy chain (P + I) / 2 applied to the uniform distribution (as the numpy generator).
  """
  k = p.shape[-1]
  a = jnp.swapaxes(p, -1, -2) - jnp.eye(k, dtype=p.dtype)
  a = a.at[..., -1, :].set(1.0)
  b = jnp.zeros(p.shape[:-1], p.dtype).at[..., -1].set(1.0)
  pi = jnp.linalg.solve(a, b[..., None])[..., 0]
  resid = jnp.abs(jnp.einsum("...i,...ij->...j", pi, p) - pi).max(-1)
  ok = jnp.isfinite(pi).all(-1) & (pi.min(-1) > -1e-5) & (resid < 1e-4)

  def lazy_powers():
    def square(_, q):
      q = q @ q
      return q / q.sum(-1, keepdims=True)
    q = jax.lax.fori_loop(0, _LAZY_SQUARINGS, square, 0.5 * (p + jnp.eye(k, dtype=p.dtype)))
    return jnp.where(ok[..., None], pi, q.mean(-2))

  pi = jax.lax.cond(ok.all(), lambda: pi, lazy_powers)
  pi = jnp.clip(pi, 0.0, None)
  return pi / pi.sum(-1, keepdims=True)


def icl_markov_chains(key: jax.Array, batch: int, k: int, alpha: float
                      ) -> tuple[jax.Array, jax.Array]:
  """(P [batch, k, k], pi [batch, k]): one chain per sequence, rows ~ Dirichlet(alpha 1_k).

  alpha = 1 (the uniform distribution on the simplex): normalised Exp(1) = Gamma(1) draws,
  -log(U), 10x cheaper on CPU than ``jax.random.dirichlet``'s rejection-sampled gammas.
  """
  if alpha == 1.0:
    g = -jnp.log(jax.random.uniform(key, (batch, k, k), minval=jnp.finfo(jnp.float32).tiny))
  else:
    g = jax.random.dirichlet(key, jnp.full((k,), alpha, jnp.float32), (batch, k))
  p = g / g.sum(-1, keepdims=True)
  return p, stationary(p)


def icl_markov(key: jax.Array, batch: int, length: int, k: int, alpha: float) -> jax.Array:
  """int32 [batch, length]: every sequence from its own chain, x_0 from its stationary
  distribution (:func:`sgd_phases.datasets.sequences.icl_markov` on device)."""
  k_chain, k_tok = jax.random.split(key)
  p, pi = icl_markov_chains(k_chain, batch, k, alpha)
  return chain_tokens(k_tok, p, pi, length)


def chain_tokens(key: jax.Array, p: jax.Array, pi: jax.Array, length: int) -> jax.Array:
  """int32 [B, length]: x_0 ~ pi[b], x_{t+1} ~ p[b, x_t] for given chains p [B, k, k]."""
  u = jax.random.uniform(key, (length, p.shape[0]))
  x0 = inverse_cdf(jnp.cumsum(pi, -1), u[0])
  rest = walk(u[1:], x0, jnp.cumsum(p, -1), p.shape[-1])
  return jnp.concatenate([x0[:, None], rest], axis=1)


def markov_source(key: jax.Array, batch: int, length: int, cdf: jax.Array, k: int,
                  order: int) -> jax.Array:
  """int32 [batch, length] from a fixed order-n source given as its CDF table [k**n, k]:
  the first n tokens uniform and independent (all of them if length <= n)."""
  u = jax.random.uniform(key, (length, batch))
  n = min(order, length)
  first = jnp.minimum((u[:n] * k).astype(jnp.int32), k - 1).T  # [batch, n]
  if length <= order:
    return first
  state = jnp.zeros((batch,), jnp.int32)
  for j in range(n):
    state = state * k + first[:, j]
  return jnp.concatenate([first, walk(u[n:], state, cdf, k)], axis=1)
