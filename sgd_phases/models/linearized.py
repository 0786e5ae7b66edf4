"""F_lin: the first-order Taylor expansion of a network around its own initialisation.

    F_lin(x; θ₀ + δ) = F(x; θ₀) + ∇_θ F(x; θ₀) · δ        (one ``jax.jvp`` per forward pass)

:class:`Linearized` wraps a Flax module with the same ``init`` / ``apply`` interface the engine
uses. ``init(key, x)`` draws θ₀ exactly as the base module does with that key — so a seed's
F_lin starts from the same θ₀ as its F (same ``engine.SeedSet``) — and sets δ = 0. The
parameters are {"theta0": θ₀, "delta": δ}; θ₀ sits behind ``stop_gradient``, so its gradient is
zero and SGD (with or without momentum, no weight decay) moves δ only: training δ by SGD is
training θ = θ₀ + δ of the linearised model by SGD. Models with BatchNorm are not supported
(the linearisation of a train-mode batch statistic is not the kernel-regime object).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn


@dataclasses.dataclass(frozen=True)
class Linearized:
  """``base`` (a Flax module without BatchNorm) linearised around its initial parameters."""
  base: nn.Module
  uses_batch_stats: bool = False

  def __post_init__(self):
    if getattr(self.base, "uses_batch_stats", False):
      raise ValueError("model: linearisation of a BatchNorm model is not supported")

  def init(self, key: jax.Array, x: jax.Array, train: bool = False) -> dict[str, Any]:
    theta0 = self.base.init(key, x, train=False)["params"]
    return {"params": {"theta0": theta0, "delta": jax.tree.map(jnp.zeros_like, theta0)}}

  def apply(self, variables: dict[str, Any], x: jax.Array, train: bool = False,
            **kwargs: Any) -> jax.Array:
    p = variables["params"]
    theta0 = jax.lax.stop_gradient(p["theta0"])
    out, tangent = jax.jvp(lambda q: self.base.apply({"params": q}, x, train=False),
                           (theta0,), (p["delta"],))
    return out + tangent
