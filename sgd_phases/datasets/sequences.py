"""Token-sequence generators for next-token prediction (numpy only, no download).

* :func:`icl_markov` - in-context Markov chains (Edelman et al. 2024, "The Evolution of
  Statistical Induction Heads: In-Context Learning Markov Chains"): every sequence comes from its
  *own* k-state chain whose transition rows are drawn ~ Dirichlet(alpha 1_k); the first token is
  drawn from that chain's stationary distribution (as in the paper).
* :func:`markov_source_transitions` / :func:`markov_source` - one *fixed* order-n Markov source
  shared by all sequences; the first n tokens of a sequence are uniform and independent.
* :func:`text_sequences` / :func:`decode_text` - character-level text chopped into
  non-overlapping windows.

Synopsis::

    tokens, p = icl_markov(1000, 64, k=3, alpha=1.0, rng=0, return_transitions=True)
    table = markov_source_transitions(k=4, order=2, alpha=0.5, rng=0)   # [4, 4, 4]
    tokens = markov_source(1000, 64, table, rng=1)                      # [1000, 64] int32
    tokens, vocab = text_sequences(text, length=128)

Randomness: ``rng`` is either a ``np.random.Generator`` (used as is, draws in a fixed order) or
an integer data seed, in which case every use gets its own named stream
(:func:`sgd_phases.datasets.base.data_rng`), e.g. ``"icl_markov/transitions"`` and
``"icl_markov/tokens"``: with a seed, the transition matrices do not depend on ``length`` and a
longer draw extends a shorter one (same prefix). Tokens are int32 in ``[0, k)``.
"""

from __future__ import annotations

import numbers
import os

import numpy as np
from etils import epath
from ml_collections import config_dict

from sgd_phases import io_lib
from sgd_phases.datasets import base, corpora, sequence_sampling, sources

RngLike = np.random.Generator | int

# Largest transition table (entries) markov_source_transitions builds: 2**26 float64 = 512 MiB.
_MAX_TABLE = 2**26


def _rng(rng: RngLike, stream: str) -> np.random.Generator:
  """``rng`` itself, or the named stream ``stream`` of the integer data seed ``rng``."""
  if isinstance(rng, np.random.Generator):
    return rng
  if isinstance(rng, bool) or not isinstance(rng, numbers.Integral) or rng < 0:
    raise ValueError(f"rng={rng!r} must be a numpy Generator or a non-negative integer seed")
  return base.data_rng(int(rng), stream)


def _check_int(name: str, value: int, minimum: int) -> int:
  if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
    raise ValueError(f"{name}={value!r} must be an integer >= {minimum}")
  return int(value)


def _check_alpha(alpha: float) -> float:
  if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not (
      np.isfinite(alpha) and alpha > 0):
    raise ValueError(f"alpha={alpha!r} must be a finite positive number")
  return float(alpha)


def _sample_rows(cdf: np.ndarray, u: np.ndarray) -> np.ndarray:
  """Inverse-CDF draw: for each row i, the first j with cdf[i, j] > u[i] (int32)."""
  idx = (u[:, None] >= cdf).sum(axis=-1)
  # Rounding can leave cdf[..., -1] a hair below 1; such a u picks the last token.
  return np.minimum(idx, cdf.shape[-1] - 1).astype(np.int32)


# ---------------------------------------------------------------------------------------------
# In-context Markov chains


def stationary_distribution(transitions: np.ndarray) -> np.ndarray:
  """Stationary distributions pi (pi P = pi, sum 1) of row-stochastic matrices [..., k, k].

  Solves (P^T - I) pi = 0 with one equation replaced by sum(pi) = 1 (batched). A matrix for
  which that system is singular or gives a bad answer (a reducible chain, possible only when
  Dirichlet draws underflow to exact zeros) falls back to powers of the lazy chain (P + I) / 2
  applied to the uniform distribution, which converge to *a* stationary distribution.
  """
  p = np.asarray(transitions, dtype=np.float64)
  if p.ndim < 2 or p.shape[-1] != p.shape[-2]:
    raise ValueError(f"transitions must have shape [..., k, k], got {p.shape}")
  k = p.shape[-1]
  flat = p.reshape(-1, k, k)
  a = np.swapaxes(flat, -1, -2) - np.eye(k)
  a[:, -1, :] = 1.0
  b = np.zeros((flat.shape[0], k, 1))
  b[:, -1] = 1.0
  pi = np.full((flat.shape[0], k), np.nan)
  try:
    pi = np.linalg.solve(a, b)[..., 0]
  except np.linalg.LinAlgError:
    for i in range(flat.shape[0]):  # Batched solve refuses the whole batch; redo one by one.
      try:
        pi[i] = np.linalg.solve(a[i], b[i])[:, 0]
      except np.linalg.LinAlgError:
        pass
  resid = np.abs(np.einsum("bi,bij->bj", pi, flat) - pi).max(axis=-1)
  bad = ~(np.isfinite(pi).all(axis=-1) & (pi.min(axis=-1) > -1e-9) & (resid < 1e-9))
  for i in np.flatnonzero(bad):
    q = 0.5 * (flat[i] + np.eye(k))
    for _ in range(64):  # (P + I)/2 to the power 2**64.
      q = q @ q
      q /= q.sum(axis=-1, keepdims=True)
    pi[i] = q.mean(axis=0)
  pi = np.clip(pi, 0.0, None)
  pi /= pi.sum(axis=-1, keepdims=True)
  return pi.reshape(p.shape[:-1])


def icl_markov(
    num_sequences: int,
    length: int,
    k: int,
    alpha: float = 1.0,
    rng: RngLike = 0,
    return_transitions: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
  """Sequences each drawn from its own random k-state Markov chain (in-context learning task).

  For sequence m, every row of its transition matrix P_m is drawn ~ Dirichlet(alpha 1_k)
  independently; x_0 ~ pi_m, the stationary distribution of P_m (Edelman et al. 2024 sample the
  first token from the stationary distribution), and x_{t+1} ~ P_m[x_t]. Vectorised over
  sequences, one step of numpy per position.

  Args:
    num_sequences: M.
    length: T, tokens per sequence.
    k: number of states (the vocabulary size).
    alpha: Dirichlet concentration of every transition row (small = sparse, peaked rows).
    rng: a Generator, or an integer seed (streams ``icl_markov/transitions`` and
      ``icl_markov/tokens``).
    return_transitions: also return the matrices P, float64 [M, k, k].

  Returns:
    int32 tokens [M, T], or ``(tokens, transitions)`` if ``return_transitions``.
  """
  m = _check_int("num_sequences", num_sequences, 1)
  length = _check_int("length", length, 1)
  k = _check_int("k", k, 1)
  alpha = _check_alpha(alpha)
  p = _rng(rng, "icl_markov/transitions").dirichlet(np.full(k, alpha), size=(m, k))
  p /= p.sum(axis=-1, keepdims=True)
  token_rng = _rng(rng, "icl_markov/tokens")
  cdf = np.cumsum(p, axis=-1)
  tokens = np.empty((m, length), dtype=np.int32)
  tokens[:, 0] = _sample_rows(np.cumsum(stationary_distribution(p), axis=-1), token_rng.random(m))
  rows = np.arange(m)
  for t in range(1, length):
    tokens[:, t] = _sample_rows(cdf[rows, tokens[:, t - 1]], token_rng.random(m))
  return (tokens, p) if return_transitions else tokens


# ---------------------------------------------------------------------------------------------
# A fixed order-n Markov source


def markov_source_transitions(k: int, order: int, alpha: float = 1.0, rng: RngLike = 0
                              ) -> np.ndarray:
  """A random order-n Markov source: float64 array of shape ``[k] * order + [k]``.

  ``table[c_1, ..., c_n]`` is the distribution of the next token given the previous n tokens
  (c_n the most recent), each row drawn ~ Dirichlet(alpha 1_k) independently. ``order=0`` gives
  a single distribution [k] (i.i.d. tokens). Seed stream: ``markov_source/transitions``.
  """
  k = _check_int("k", k, 1)
  order = _check_int("order", order, 0)
  alpha = _check_alpha(alpha)
  if k ** (order + 1) > _MAX_TABLE:
    raise ValueError(f"k={k}, order={order}: the table would have k**(order+1) = "
                     f"{k ** (order + 1)} entries (limit {_MAX_TABLE})")
  table = _rng(rng, "markov_source/transitions").dirichlet(np.full(k, alpha), size=(k,) * order)
  return table / table.sum(axis=-1, keepdims=True)


def markov_source(num_sequences: int, length: int, transitions: np.ndarray, rng: RngLike = 0
                  ) -> np.ndarray:
  """Samples int32 sequences [M, T] from an order-n source (:func:`markov_source_transitions`).

  The first n tokens of every sequence (all of them if T <= n) are uniform on [0, k) and
  independent; token t >= n is drawn from ``transitions[x_{t-n}, ..., x_{t-1}]``. Seed stream:
  ``markov_source/tokens``.
  """
  m = _check_int("num_sequences", num_sequences, 1)
  length = _check_int("length", length, 1)
  table = np.asarray(transitions, dtype=np.float64)
  k, order = table.shape[-1], table.ndim - 1
  if k < 1 or table.shape != (k,) * (order + 1):
    raise ValueError(f"transitions must have shape [k] * (order + 1), got {table.shape}")
  if not (np.all(table >= 0) and np.allclose(table.sum(axis=-1), 1.0)):
    raise ValueError("transitions: every row must be a probability distribution")
  cdf = np.cumsum(table.reshape(k**order, k), axis=-1)
  gen = _rng(rng, "markov_source/tokens")
  tokens = np.empty((m, length), dtype=np.int32)
  ctx = np.zeros(m, dtype=np.int64)  # Base-k index of the previous n tokens (oldest first).
  for t in range(length):
    u = gen.random(m)
    if t < order:
      tokens[:, t] = np.minimum((u * k).astype(np.int32), k - 1)
    else:
      tokens[:, t] = _sample_rows(cdf[ctx], u)
    if order:
      ctx = (ctx * k + tokens[:, t]) % k**order
  return tokens


# ---------------------------------------------------------------------------------------------
# Character-level text


def _codepoints(s: str) -> np.ndarray:
  return np.frombuffer(s.encode("utf-32-le"), dtype=np.uint32)


def text_sequences(text: str, length: int, vocab: str | None = None) -> tuple[np.ndarray, str]:
  """Character-level tokens of ``text`` in non-overlapping windows of ``length``.

  Args:
    text: the text (any Unicode; one token per code point).
    length: T, characters per window. The ``len(text) % T`` trailing characters are dropped.
    vocab: the vocabulary, a string of distinct characters; token i is ``vocab[i]``. Default:
      the sorted set of the characters of ``text`` (build it on the training text and pass it
      when encoding validation text).

  Returns:
    ``(tokens, vocab)``: int32 tokens [len(text) // T, T] and the vocabulary used.

  Raises:
    ValueError: a character of ``text`` is not in ``vocab`` (the error names it and its
      position; there is no out-of-vocabulary token), ``vocab`` repeats a character, or ``text``
      is shorter than one window.
    TypeError: ``text`` is not a str.
  """
  if not isinstance(text, str):
    raise TypeError(f"text must be a str, got {type(text).__name__}")
  length = _check_int("length", length, 1)
  if vocab is None:
    vocab = "".join(sorted(set(text)))
  elif not isinstance(vocab, str) or len(set(vocab)) != len(vocab) or not vocab:
    raise ValueError("vocab must be a non-empty string of distinct characters")
  m = len(text) // length
  if m == 0:
    raise ValueError(f"text has {len(text)} characters, fewer than one window of length={length}")
  codes = _codepoints(text[: m * length])
  vcodes = _codepoints(vocab)
  order = np.argsort(vcodes)
  pos = np.minimum(np.searchsorted(vcodes[order], codes), len(vocab) - 1)
  missing = vcodes[order][pos] != codes
  if missing.any():
    i = int(np.argmax(missing))
    raise ValueError(f"character {text[i]!r} (position {i}) is not in the vocabulary")
  return order[pos].astype(np.int32).reshape(m, length), vocab


def in_vocab(text: str, vocab: str) -> str:
  """``text`` without the characters that are not in ``vocab`` (vectorised over code points)."""
  codes = _codepoints(text)
  return codes[np.isin(codes, _codepoints(vocab))].tobytes().decode("utf-32-le")


def decode_text(tokens: np.ndarray, vocab: str) -> str:
  """The string spelled by ``tokens`` (any shape, read in C order) under ``vocab``."""
  return "".join(vocab[i] for i in np.asarray(tokens).ravel())


# ----------------------------------------------------------------------------- registry entries
# A sequence dataset holds, per split, inputs x = tokens[:, :-1] and targets y = tokens[:, 1:]
# (int32 [M, T - 1]): every (sequence, position) pair is one test example (N = M (T - 1)), Y is
# the next token, and F's hard prediction there is the argmax of its logits at that position.
# With skip_positions = s the test targets are tokens[:, 1 + s:] (the last T - 1 - s positions
# are scored; a model's logits are aligned to them from the end).
# ``train_size`` / ``test_size`` count sequences; label noise does not apply.
#
# The synthetic tasks (icl_markov, markov_source) are infinite: with train_sampling="device"
# (their default) F's ``train_size`` training sequences are never stored: every SGD step draws
# a fresh batch on device (``sequence_sampling.Sampler``, put in ``meta["train_sampler"]``),
# and the host keeps min(train_size, HOST_TRAIN_SEQUENCES) sequences of the same law for the
# train-accuracy subset and the references fitted on training data (n-grams). "pregenerated":
# the ``train_size`` sequences are drawn once on the host and F trains on them (in epochs if
# fewer than num_steps x batch_size). The test sequences come from their own seed stream: the
# same whatever train_size and the mode.
SEQUENCE_DATASETS = ("icl_markov", "markov_source", "text")
SYNTHETIC = ("icl_markov", "markov_source")
TRAIN_SAMPLING = ("device", "pregenerated")
HOST_TRAIN_SEQUENCES = 4096  # host sample of the training law under device sampling


def default_config(name: str):
  """Defaults of a sequence dataset (``icl_markov``, ``markov_source`` or ``text``)."""
  c = base.common_config(name)
  c.train_size = 4096  # training sequences (each seen once when num_steps x batch_size <= this)
  c.test_size = 256  # held-out sequences: N = test_size x (length - 1) test positions
  c.length = 100 if name == "icl_markov" else 64  # T, tokens per sequence
  # test positions t < skip_positions are not scored (N = test_size x (T - 1 - skip)); training
  # uses every position
  c.skip_positions = 0
  if name in SYNTHETIC:
    c.k = 3  # states (the vocabulary)
    c.alpha = 1.0  # Dirichlet concentration of every transition row
    # device: F's training sequences drawn on device, a fresh batch every step (the host keeps
    # min(train_size, 4096) for train accuracy and fitted references); pregenerated: drawn
    # once on the host, train_size of them (see the note above SEQUENCE_DATASETS)
    c.train_sampling = "device"
  if name == "markov_source":
    c.order = 2  # n: the next token depends on the previous n
  if name == "text":
    c.path = ""  # a UTF-8 text file (local path or URI); vocabulary from the training split
    # or a public-domain corpus that a package ships (datasets.corpora.CORPORA: "kjv")
    c.corpus = ""
    c.test_fraction = 0.1  # the file's last fraction of windows is the test split
    # sha256 of the file's bytes (16 hex digits), filled in by a run (datasets.pin); a value
    # given here must match the file
    c.fingerprint = config_dict.placeholder(str)
  return c


@sources.cached_by_stamp(maxsize=2)
def _read_text(path: str) -> tuple[str, str]:
  try:
    raw = epath.Path(path).read_bytes()
  except IsADirectoryError:
    raise ValueError(f"path={path!r}: is a folder; name=text needs a UTF-8 text file") from None
  except OSError as e:
    raise ValueError(f"path={path!r}: cannot read it ({e})") from e
  try:
    text = raw.decode("utf-8")
  except UnicodeDecodeError as e:
    raise ValueError(f"path={path!r}: not UTF-8 text (byte {e.start}: {e.reason})") from None
  return text, sources.digest([raw])


def read_text(config) -> tuple[str, str]:
  """The text of a ``text`` dataset's ``path`` (or ``corpus``) and its fingerprint (sha256 of
  the bytes); one ValueError naming ``path`` for anything but a readable UTF-8 file."""
  if config.get("corpus"):
    if config["path"]:
      raise ValueError(f"corpus={config['corpus']!r}, path={config['path']!r}: set one of them")
    text = corpora.text(config["corpus"])
    return text, sources.digest([text])
  path = config["path"]
  if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
    raise ValueError(f"path={path!r}: name=text needs a UTF-8 text file (or a corpus: "
                     f"{sorted(corpora.CORPORA)})")
  path = io_lib.check_location(path, "path")
  if io_lib.is_local(path):
    path = os.path.abspath(os.path.expanduser(path))
  if not epath.Path(path).exists():
    raise ValueError(f"path={path!r}: no such file; name=text needs a UTF-8 text file")
  return _read_text(path, files=[path])


def fingerprint(config) -> str | None:
  """The content fingerprint of a sequence dataset: ``text``'s file bytes; None for the
  generated ones (their config is their content)."""
  return read_text(config)[1] if config["name"] == "text" else None


def _split_xy(tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  return (np.ascontiguousarray(tokens[:, :-1], dtype=np.int32),
          np.ascontiguousarray(tokens[:, 1:], dtype=np.int32))


def _sizes(config) -> tuple[int, int]:
  if config["label_noise"] or config["noisy_test"]:
    raise ValueError(f"label_noise={config['label_noise']!r}: sequence datasets have no label "
                     "noise (set 0 and noisy_test=False)")
  sizes = []
  for field in ("train_size", "test_size"):
    sizes.append(_check_int(field, config[field], 1))
  _check_int("length", config["length"], 3)
  skip = config["skip_positions"]
  if isinstance(skip, bool) or not isinstance(skip, int) or not 0 <= skip <= config["length"] - 2:
    raise ValueError(f"skip_positions={skip!r} must be an int in [0, length - 2]")
  return sizes[0], sizes[1]


def _synthetic(config, n_train: int, n_test: int, meta: dict
               ) -> tuple[np.ndarray, sequence_sampling.Sampler]:
  """(host train then test tokens, the task's device sampler) of icl_markov or markov_source;
  ``meta`` gets what the closed-form references need. Test and train sequences come from their
  own streams of the data seed (``<name>/test``, ``<name>/train``)."""
  name, seed, length = config["name"], config["seed"], config["length"]
  if config["train_sampling"] not in TRAIN_SAMPLING:
    raise ValueError(f"train_sampling={config['train_sampling']!r} must be one of "
                     f"{TRAIN_SAMPLING}")
  k, alpha = _check_int("k", config["k"], 2), _check_alpha(config["alpha"])
  meta.update(alpha=alpha, train_sampling=config["train_sampling"])
  table = None
  if name == "markov_source":
    table = markov_source_transitions(k, _check_int("order", config["order"], 1), alpha, rng=seed)
    meta.update(transitions=table, order=config["order"])

  def draw(m: int, split: str) -> np.ndarray:
    rng = base.data_rng(seed, f"{name}/{split}")
    if table is None:
      return icl_markov(m, length, k, alpha, rng=rng)
    return markov_source(m, length, table, rng=rng)

  sampler = sequence_sampling.Sampler(name, k, length, alpha, table=table)
  if config["train_sampling"] == "device":
    n_train = min(n_train, HOST_TRAIN_SEQUENCES)
  return np.concatenate([draw(n_train, "train"), draw(n_test, "test")]), sampler


def build(config) -> base.Dataset:
  """A sequence dataset from its resolved config (see :func:`default_config`)."""
  name = config["name"]
  n_train, n_test = _sizes(config)
  length = config["length"]
  meta: dict = {"length": length, "skip_positions": config["skip_positions"]}
  if name in SYNTHETIC:
    tokens, sampler = _synthetic(config, n_train, n_test, meta)
    k, n_train = sampler.k, len(tokens) - n_test
    if config["train_sampling"] == "device":
      meta.update(train_sampler=sampler)
  else:
    text, _ = read_text(config)
    frac = config["test_fraction"]
    if not 0 < frac < 1:
      raise ValueError(f"test_fraction={frac!r} must be in (0, 1)")
    cut = int(len(text) * (1 - frac))
    train, vocab = text_sequences(text[:cut], length)
    test, _ = text_sequences(in_vocab(text[cut:], vocab), length, vocab=vocab)  # unseen dropped
    k = len(vocab)
    if k < 2:
      raise ValueError(f"path={config['path']!r}: the training text has fewer than 2 distinct "
                       "characters")
    tokens = np.concatenate([train[:n_train], test[:n_test]])
    n_train, n_test = min(n_train, len(train)), min(n_test, len(test))
    meta.update(vocab=vocab)
  x_tr, y_tr = _split_xy(tokens[:n_train])
  x_te, y_te = _split_xy(tokens[n_train:n_train + n_test])
  y_te = np.ascontiguousarray(y_te[:, config["skip_positions"]:])  # the scored positions
  return base.Dataset(x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te, y_train_clean=y_tr,
                      y_test_clean=y_te, num_classes=int(k), name=name, meta=meta)
