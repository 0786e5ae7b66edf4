"""Sequence datasets for next-token prediction: ``icl_markov``, ``markov_source``, ``text``.

The registry's entries (:mod:`sgd_phases.datasets`): :func:`default_config`, :func:`build` (one
``Dataset`` of inputs ``tokens[:, :-1]`` and next-token targets), the ``text`` file's reading and
content :func:`fingerprint`. The generators they draw from live in
:mod:`sgd_phases.datasets.sequence_generators` and are re-exported here
(``sequences.icl_markov``, ``sequences.markov_source``, ``sequences.text_sequences``, ...).

Synopsis::

    from sgd_phases import datasets
    ds = datasets.get_dataset({"name": "icl_markov", "k": 3, "length": 100, "seed": 0})
    ds.x_test.shape, ds.y_test.shape                  # [test_size, T - 1] each, int32
"""

from __future__ import annotations

import os

import numpy as np
from etils import epath
from ml_collections import config_dict

from sgd_phases import io_lib
from sgd_phases.datasets import base, corpora, sequence_sampling, sources
from sgd_phases.datasets.sequence_generators import (  # noqa: F401 (re-exported)
    check_alpha, check_int, decode_text, icl_markov, in_vocab, markov_source,
    markov_source_transitions, stationary_distribution, text_sequences)

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
    sizes.append(check_int(field, config[field], 1))
  check_int("length", config["length"], 3)
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
  k, alpha = check_int("k", config["k"], 2), check_alpha(config["alpha"])
  meta.update(alpha=alpha, train_sampling=config["train_sampling"])
  table = None
  if name == "markov_source":
    table = markov_source_transitions(k, check_int("order", config["order"], 1), alpha, rng=seed)
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
