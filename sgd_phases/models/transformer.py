"""Causal decoder-only transformer (GPT-style, pre-LN) for next-token prediction.

Synopsis::

    from sgd_phases.models import get_model
    tf = get_model("transformer", num_classes=V, num_layers=2, num_heads=1, d_model=64)
    variables = tf.init(jax.random.key(0), tokens)    # tokens: int [B, T], values in [0, V)
    logits = tf.apply(variables, tokens)              # [B, T, V] float32; row t sees tokens <= t
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()  # [B, T]

    # attention-only, no LayerNorm (Edelman et al. 2024, "The Evolution of Statistical
    # Induction Heads"):
    tf = get_model("transformer", num_classes=V, mlp=False, layer_norm=False)

Unlike the classifiers of this package (``[B, ...] -> [B, K]``) this model maps a batch of token
sequences to one logit vector per position: ``num_classes`` is the vocabulary size V.
"""

from __future__ import annotations

import functools
import math
import numbers
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from sgd_phases.models import layers

EMBEDDINGS = ("learned", "onehot")
_MASK_VALUE = -1e9  # added-in score of a masked (future) position; exp() underflows to 0


class CausalSelfAttention(nn.Module):
  """Multi-head causal self-attention, written out (no dropout, no cache).

  q, k, v = Dense(d_model)(h) split into ``num_heads`` heads of d_head = d_model / num_heads;
  scores q·k / sqrt(d_head), future positions set to -1e9, softmax in float32, heads
  concatenated and projected by Dense(d_model). The four Dense layers have a bias if
  ``use_bias``.

  Heads are folded into the batch axis, [B·H, T, d_head], for the two attention products:
  XLA:CPU ran the same products with two batch axes [B, H, ...] (or with heads in third
  place, [B, T, H, ...], where it also transposed the [T, T] scores in the backward pass) at
  about half the speed (measured at T = 99, d_model 16: ``benchmarks/sequence_throughput.py``).
  """

  num_heads: int
  init_scale: float
  use_bias: bool = True

  @nn.compact
  def __call__(self, h: jax.Array) -> jax.Array:
    batch, length, d_model = h.shape
    num_heads = self.num_heads
    d_head = d_model // num_heads
    dense = functools.partial(nn.Dense, d_model, use_bias=self.use_bias,
                              kernel_init=nn.initializers.normal(self.init_scale))

    def heads(name: str) -> jax.Array:  # [B, T, d] -> [B·H, T, d_head]
      y = dense(name=name)(h).reshape(batch, length, num_heads, d_head)
      return y.transpose(0, 2, 1, 3).reshape(batch * num_heads, length, d_head)

    q, k, v = heads("query"), heads("key"), heads("value")
    scores = jnp.einsum("bqd,bkd->bqk", q, k).astype(jnp.float32) / math.sqrt(d_head)
    causal = jnp.tril(jnp.ones((length, length), dtype=bool))  # [q, k]: k <= q
    scores = jnp.where(causal, scores, _MASK_VALUE)
    weights = jax.nn.softmax(scores, axis=-1)
    y = jnp.einsum("bqk,bkd->bqd", weights, v).reshape(batch, num_heads, length, d_head)
    return dense(name="out")(y.transpose(0, 2, 1, 3).reshape(batch, length, d_model))


class Transformer(nn.Module):
  """Causal decoder-only transformer: tokens [B, T] -> next-token logits [B, T, V].

  Residual stream h = tok_emb(x) + pos_emb[:T]; per layer h += Attn(LN(h)) and, if ``mlp``,
  h += MLP(LN(h)) with MLP = Dense(mlp_ratio·d_model) -> GELU (tanh approximation, flax's
  ``nn.gelu``) -> Dense(d_model); then LN(h) and the unembedding Dense(V). Position t attends
  only to positions <= t. Without ``layer_norm`` there is no normalisation anywhere (final LN
  included). No dropout; ``train`` changes nothing.

  Attributes:
    num_classes: vocabulary size V (tokens in [0, V); also the number of logits).
    num_layers: transformer blocks (0 gives the embedding -> unembedding baseline).
    num_heads: attention heads per layer; must divide ``d_model``.
    d_model: width of the residual stream.
    mlp: an MLP sublayer in every block (False: attention-only).
    mlp_ratio: MLP hidden width / d_model.
    layer_norm: pre-LN blocks and a final LN (flax LayerNorm: scale 1, bias 0, eps 1e-6).
    embedding: "learned" (``nn.Embed`` V -> d_model, param ``tok_embed/embedding`` [V, d]) or
      "onehot" (one_hot(x, V) @ kernel, a bias-free ``nn.Dense``, param ``tok_embed/kernel``
      [V, d]). Same function and parameter count; only the computation (gather vs matmul) and
      the out-of-range behaviour differ: a token outside [0, V) embeds as NaN with "learned"
      (``jnp.take`` fill), which reaches every position of its sequence (0 · NaN in the masked
      attention sum), and as the zero vector with "onehot". Tokens are not range-checked.
    max_len: number of learned positions (param ``pos_embed`` [max_len, d]); T <= max_len.
    init_scale: std of the N(0, init_scale²) init of every kernel and embedding (token and
      position); biases start at 0, LayerNorm scales at 1.
    use_bias: a bias in every Dense layer (attention projections, MLP, unembedding); False:
      bias-free, as Edelman et al.'s code (their ``nn.Linear(..., bias=False)``).

  Tokens may be any integer dtype; float arrays (the engine may hand inputs over as float32)
  are rounded and cast to int32, so they must hold integer values.
  """

  num_classes: int
  num_layers: int = 2
  num_heads: int = 1
  d_model: int = 64
  mlp: bool = True
  mlp_ratio: int = 4
  layer_norm: bool = True
  embedding: str = "learned"
  max_len: int = 256
  init_scale: float = 0.02
  use_bias: bool = True
  uses_batch_stats: ClassVar[bool] = False

  def __post_init__(self) -> None:
    layers.check_num_classes(self.num_classes)
    layers.check_positive_int(self.num_layers, "num_layers", minimum=0)
    layers.check_positive_int(self.num_heads, "num_heads")
    layers.check_positive_int(self.d_model, "d_model")
    layers.check_positive_int(self.mlp_ratio, "mlp_ratio")
    layers.check_positive_int(self.max_len, "max_len")
    if self.d_model % self.num_heads:
      raise ValueError(f"d_model must be divisible by num_heads={self.num_heads}, "
                       f"got {self.d_model}")
    for name in ("mlp", "layer_norm", "use_bias"):
      if type(getattr(self, name)) is not bool:
        raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")
    if self.embedding not in EMBEDDINGS:
      raise ValueError(f"embedding must be one of {EMBEDDINGS}, got {self.embedding!r}")
    scale = self.init_scale
    if (isinstance(scale, bool) or not isinstance(scale, numbers.Real)
        or not (math.isfinite(scale) and scale > 0)):
      raise ValueError(f"init_scale must be a finite float > 0, got {scale!r}")
    super().__post_init__()

  def _norm(self, h: jax.Array, name: str) -> jax.Array:
    return nn.LayerNorm(name=name)(h) if self.layer_norm else h

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    del train  # no dropout, no batch statistics
    x = jnp.asarray(x)
    if x.ndim != 2:
      raise ValueError(f"x must be a [B, T] batch of token ids, got shape {x.shape}")
    if not jnp.issubdtype(x.dtype, jnp.integer):
      x = jnp.round(x).astype(jnp.int32)
    length = x.shape[1]
    if length > self.max_len:
      raise ValueError(f"max_len={self.max_len} is less than the sequence length T={length}")
    init = nn.initializers.normal(self.init_scale)
    vocab, d = self.num_classes, self.d_model

    if self.embedding == "learned":
      h = nn.Embed(vocab, d, embedding_init=init, name="tok_embed")(x)
    else:
      onehot = jax.nn.one_hot(x, vocab, dtype=jnp.float32)
      h = nn.Dense(d, use_bias=False, kernel_init=init, name="tok_embed")(onehot)
    pos = self.param("pos_embed", init, (self.max_len, d))
    h = h + pos[None, :length]

    for i in range(self.num_layers):
      h = h + CausalSelfAttention(self.num_heads, self.init_scale, self.use_bias,
                                  name=f"attn_{i}")(self._norm(h, f"ln_attn_{i}"))
      if self.mlp:
        dense = functools.partial(nn.Dense, use_bias=self.use_bias, kernel_init=init)
        z = dense(self.mlp_ratio * d, name=f"mlp_in_{i}")(self._norm(h, f"ln_mlp_{i}"))
        h = h + dense(d, name=f"mlp_out_{i}")(nn.gelu(z))
    h = self._norm(h, "ln_final")
    logits = nn.Dense(vocab, use_bias=self.use_bias, kernel_init=init, name="unembed")(h)
    return logits.astype(jnp.float32)
