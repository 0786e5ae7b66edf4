"""The linear reference classifier L (logistic / softmax regression on raw inputs).

Synopsis::

    from sgd_phases.models import get_model
    lin = get_model("linear", num_classes=2, init_scale=0.1, init_first=1.0)
    variables = lin.init(jax.random.key(0), x)          # x: [B, d] or [B, H, W, C]
    logits = lin.apply(variables, x)                     # [B, 2]
"""

from __future__ import annotations

import math
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from sgd_phases.models import layers


class Linear(nn.Module):
  """The reference linear classifier L: flatten -> Dense(K).

  Initialisation (for the Theorem-1 experiment; defaults give flax's LeCun-normal kernel):
    init_scale: None -> flax default; a float s -> every kernel entry ~ Uniform[-s, s].
    init_first: if set to v, the kernel row of input coordinate 0 is overwritten with
      [-v/2, +v/2, 0, ..., 0], so the binary logit difference z1 - z0 has weight exactly v on
      coordinate 0 (the other classes get weight 0 there).
  For K = 2 the effective weight vector of the binary classifier is d = w[:, 1] - w[:, 0].
  Theorem 1 asks for w_0(1) >= -n^0.99 (here d(0) = init_first) and |w_0(i)| <= 1 - 2p - eps
  for i > 1; with init_scale s every |d(i)| <= 2s, so s <= (1 - 2p - eps) / 2 meets the second
  condition and s larger than that can break it. The bias (if any) is initialised to zero.
  """

  num_classes: int
  use_bias: bool = True
  init_scale: float | None = None
  init_first: float | None = None
  uses_batch_stats: ClassVar[bool] = False

  def __post_init__(self) -> None:
    layers.check_num_classes(self.num_classes)
    if self.init_scale is not None and not float(self.init_scale) >= 0.0:
      raise ValueError(f"init_scale must be None or >= 0, got {self.init_scale!r}")
    if self.init_first is not None and not math.isfinite(float(self.init_first)):
      raise ValueError(f"init_first must be None or a finite float, got {self.init_first!r}")
    super().__post_init__()

  def _kernel_init(self, key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
    if self.init_scale is None:
      kernel = nn.initializers.lecun_normal()(key, shape, dtype)
    else:
      s = float(self.init_scale)
      kernel = jax.random.uniform(key, shape, dtype, minval=-s, maxval=s)
    if self.init_first is not None:
      half = 0.5 * float(self.init_first)
      row = jnp.zeros((shape[1],), dtype).at[0].set(-half).at[1].set(half)
      kernel = kernel.at[0].set(row)
    return kernel

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    del train  # no train-time behaviour
    x = layers.as_float_vectors(x)
    return nn.Dense(self.num_classes, use_bias=self.use_bias, kernel_init=self._kernel_init)(x)
