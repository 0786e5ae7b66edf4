"""Shared building blocks: a convolution with interchangeable implementations, pooling, checks.

Synopsis::

    from sgd_phases.models import layers
    y = layers.Conv(32, conv_impl="patches")(x)     # same params as conv_impl="lax"
    y = layers.max_pool_2x2(y)                      # 2x2 / stride 2, floor ("VALID") pooling

``Conv`` owns the same parameters as ``flax.linen.Conv`` (``kernel`` [kh, kw, Cin, Cout] and
``bias`` [Cout]) and computes with one of
  "lax":     ``lax.conv_general_dilated`` (what ``nn.Conv`` does);
  "patches": im2col: the kh·kw shifted (strided) slices of the padded input are concatenated
             into a [B, Ho, Wo, kh·kw·Cin] tensor and multiplied by the kernel reshaped to
             [kh·kw·Cin, Cout];
  "shifted": the same im2col product split into its kh·kw blocks, sum_t slice_t(x) @ kernel[t],
             so the patch tensor is never materialised (XLA:CPU builds it by copying twice:
             slices, then concatenation).
All give the same outputs for the same parameters (up to float summation order), so parameters
are interchangeable. Under ``jax.vmap`` over seeds "lax" becomes a grouped convolution while
the other two become batched matmuls. "auto" picks per backend, see ``resolve_conv_impl``.
"""

from __future__ import annotations

import functools
import numbers
import operator
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

CONV_IMPLS = ("auto", "lax", "patches", "shifted")
Padding = str | Sequence[tuple[int, int]]
Initializer = Callable[..., jax.Array]


def resolve_conv_impl(conv_impl: str) -> str:
  """Maps "auto" to a concrete implementation for the default JAX backend.

  "auto" = "patches" on CPU, "lax" elsewhere. Measured with ``python -m benchmarks.conv_impl_bench``
  (batch 64, forward+backward of the mean cross-entropy, jit; median of interleaved rounds; 2-core
  AMD EPYC VM shared with other jobs, load avg 4-10, jax 0.10.2). Calls/s; each "x4" call does
  4 forward+backward passes (4 seeds, or 4 SGD steps of one seed):
                                         paper_cnn 28x28x1       cnn3 28x28x1      resnet20 32x32x3
                                        lax  patch shift     lax  patch shift    lax  patch shift
    one seed, top level                24.4  17.6  22.5     12.2  12.0  13.0    1.55  0.72  0.71
    vmap over 4 seeds                   3.3   3.8   4.1      2.0   3.1   2.9    0.10  0.15  0.15
    lax.map over 4 seeds                1.1   4.2   4.1      0.4   4.0   3.3    0.01  0.23  0.20
    unrolled loop over 4 seeds          4.0   3.6   3.6      5.9   3.1   2.8    0.37  0.17  0.19
    lax.scan, 4 SGD steps of one seed   1.1   4.7   5.0      0.4   4.1   3.7    0.01  0.20  0.20
  (paper_cnn: --reps 21, benchmarks/results/conv_impl_cpu.json; cnn3/resnet20: --models
  cnn3,resnet20 --reps 5.) XLA:CPU convolutions inside a loop body (scan / map / while: every
  jitted training loop) ran 4-20x+ slower than at top level (cf. jax-ml/jax#12868), matmuls did
  not; vmap turns convolutions into slower grouped ones. At top level, outside any loop, "lax" is
  as fast or (resnet20) 2x faster. "patches" and "shifted" are within noise of each other;
  "patches" was ahead inside loops in 4 of 6 cells. On GPU/TPU the native convolution (cuDNN /
  TPU) is the fast path (not measured: no accelerator was available), hence "lax" there.
  """
  if conv_impl not in CONV_IMPLS:
    raise ValueError(f"conv_impl must be one of {CONV_IMPLS}, got {conv_impl!r}")
  if conv_impl == "auto":
    return "patches" if jax.default_backend() == "cpu" else "lax"
  return conv_impl


def _pairs(value: int | Sequence[int], name: str) -> tuple[int, int]:
  pair = (value, value) if isinstance(value, int) else tuple(value)
  if len(pair) != 2 or any(int(v) < 1 for v in pair):
    raise ValueError(f"{name} must be a positive int or a pair of them, got {value!r}")
  return int(pair[0]), int(pair[1])


def shifted_views(
    x: jax.Array,
    kernel_size: tuple[int, int],
    strides: tuple[int, int],
    pads: Sequence[tuple[int, int]],
) -> list[jax.Array]:
  """The kh·kw strided slices of the padded input that a kernel tap (i, j) sees, in (i, j) order.

  Each view is [B, Ho, Wo, C]; concatenated on the channel axis they form the im2col matrix.
  """
  kh, kw = kernel_size
  sh, sw = strides
  (pt, pb), (pl, pr) = pads
  if pt or pb or pl or pr:
    x = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
  batch, height, width, channels = x.shape
  out_h, out_w = (height - kh) // sh + 1, (width - kw) // sw + 1
  if out_h < 1 or out_w < 1:
    raise ValueError(f"x: spatial size {x.shape[1:3]} is too small for a {kernel_size} kernel")
  return [
      lax.slice(
          x,
          (0, i, j, 0),
          (batch, i + sh * (out_h - 1) + 1, j + sw * (out_w - 1) + 1, channels),
          (1, sh, sw, 1),
      )
      for i in range(kh)
      for j in range(kw)
  ]


def im2col(
    x: jax.Array,
    kernel_size: tuple[int, int],
    strides: tuple[int, int],
    pads: Sequence[tuple[int, int]],
) -> jax.Array:
  """[B, H, W, C] -> [B, Ho, Wo, kh·kw·C] patches, ordered (kh, kw, C) like a reshaped kernel.

  Built from strided slices and one concatenation (on CPU cheaper than
  ``lax.conv_general_dilated_patches``, itself a convolution with a one-hot kernel).
  """
  views = shifted_views(x, kernel_size, strides, pads)
  return views[0] if len(views) == 1 else jnp.concatenate(views, axis=-1)


class Conv(nn.Module):
  """2-D convolution on NHWC input with ``nn.Conv``'s parameters and a choice of implementation.

  Attributes:
    features: output channels.
    kernel_size: (kh, kw) or an int.
    strides: (sh, sw) or an int.
    padding: "SAME", "VALID" or explicit ((top, bottom), (left, right)).
    use_bias: add a learned bias.
    conv_impl: "lax", "patches", "shifted" or "auto" (see the module docstring).
    kernel_init / bias_init: initialisers (defaults as ``nn.Conv``).
  """

  features: int
  kernel_size: int | Sequence[int] = 3
  strides: int | Sequence[int] = 1
  padding: Padding = "SAME"
  use_bias: bool = True
  conv_impl: str = "auto"
  kernel_init: Initializer = nn.initializers.lecun_normal()
  bias_init: Initializer = nn.initializers.zeros_init()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if x.ndim != 4:
      raise ValueError(f"x must be rank-4 NHWC, got shape {x.shape}")
    impl = resolve_conv_impl(self.conv_impl)
    kh, kw = _pairs(self.kernel_size, "kernel_size")
    strides = _pairs(self.strides, "strides")
    in_features = x.shape[-1]
    kernel = self.param("kernel", self.kernel_init, (kh, kw, in_features, self.features))
    if isinstance(self.padding, str):
      pads = lax.padtype_to_pads(x.shape[1:3], (kh, kw), strides, self.padding)
    else:
      pads = tuple(tuple(int(v) for v in p) for p in self.padding)
    if impl == "lax":
      y = lax.conv_general_dilated(
          x, kernel, strides, pads, dimension_numbers=("NHWC", "HWIO", "NHWC")
      )
    elif impl == "patches":
      patches = im2col(x, (kh, kw), strides, pads)
      y = patches @ kernel.reshape(kh * kw * in_features, self.features)
    else:  # "shifted": the im2col product split into its kh·kw blocks; no patch tensor.
      views = shifted_views(x, (kh, kw), strides, pads)
      y = functools.reduce(
          operator.add, (v @ kernel[t // kw, t % kw] for t, v in enumerate(views))
      )
    if self.use_bias:
      bias = self.param("bias", self.bias_init, (self.features,))
      y = y + bias.reshape((1, 1, 1, self.features))
    return y


def max_pool_2x2(x: jax.Array) -> jax.Array:
  """2x2 max-pool with stride 2 and floor rounding (= ``nn.max_pool(x, (2, 2), (2, 2))``).

  Written as crop + reshape + max instead of ``lax.reduce_window``: on CPU the backward pass of
  reduce_window (select-and-scatter) was ~5x slower (26x26x32 maps, batch 64: 9.7 ms vs 2.0 ms).
  Gradients agree except on exact ties inside a window (here shared equally, there to one element).
  """
  batch, height, width, channels = x.shape
  h2, w2 = height // 2, width // 2
  x = x[:, : 2 * h2, : 2 * w2, :]
  return jnp.max(x.reshape(batch, h2, 2, w2, 2, channels), axis=(2, 4))


def as_float_images(x: Any) -> jax.Array:
  """Checks rank-4 NHWC input and casts it to float32."""
  x = jnp.asarray(x)
  if x.ndim != 4:
    raise ValueError(f"x must be a rank-4 NHWC image batch, got shape {x.shape}")
  return x.astype(jnp.float32)


def as_float_vectors(x: Any) -> jax.Array:
  """Flattens everything after the batch axis: [B, ...] -> [B, d] float32."""
  x = jnp.asarray(x)
  if x.ndim < 2:
    raise ValueError(f"x must have a batch axis and at least one feature axis, got {x.shape}")
  return x.reshape(x.shape[0], -1).astype(jnp.float32)


def global_avg_pool(x: jax.Array) -> jax.Array:
  """[B, H, W, C] -> [B, C]."""
  return jnp.mean(x, axis=(1, 2))


def check_positive_int(value: Any, name: str, minimum: int = 1) -> None:
  """Raises ValueError naming ``name`` unless ``value`` is an int >= minimum."""
  if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
    raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def check_num_classes(num_classes: int) -> None:
  """Raises ValueError unless num_classes is an int >= 2 (binary tasks use K = 2 logits)."""
  check_positive_int(num_classes, "num_classes", minimum=2)
