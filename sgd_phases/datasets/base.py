"""Dataset container and the pieces every dataset shares.

Every dataset in the registry is built the same way: a builder produces *raw* arrays (all of the
train and test split), then :func:`finalize` applies, in this order,

1. class grouping (image datasets only, see :func:`group_classes`),
2. class-balanced subsampling to ``train_size`` / ``test_size`` (:func:`balanced_subsample`),
3. label noise on the training labels, and on the test labels if ``noisy_test``
   (:func:`apply_label_noise`),

each driven by its own named random stream derived from the data seed (:func:`data_rng`), so that
e.g. changing ``noisy_test`` never changes the training labels.

Synopsis::

    rng = data_rng(seed=0, stream="train_noise")
    y_noisy = apply_label_noise(y, p=0.1, num_classes=2, rng=rng)
"""

from __future__ import annotations

import ast
import dataclasses
import numbers
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections
import numpy as np
from ml_collections import config_dict

ClassSpec = str | Sequence[Sequence[int]]


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
  """A fully materialised classification dataset (numpy, host memory).

  Attributes:
    x_train: float32 inputs, images NHWC in [0, 1], synthetic [N, d].
    y_train: int32 training labels in [0, num_classes), after label noise.
    x_test: float32 test inputs.
    y_test: int32 test labels (noisy only if the config set ``noisy_test``).
    y_train_clean: int32 training labels before label noise.
    y_test_clean: int32 test labels before label noise.
    num_classes: number of classes K.
    name: registry name of the dataset.
    meta: what a dataset's closed-form references need (sequence datasets: the prior, the
      source's transition table, the vocabulary); empty for the others.
  """

  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  y_train_clean: np.ndarray
  y_test_clean: np.ndarray
  num_classes: int
  name: str
  meta: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  @property
  def input_shape(self) -> tuple[int, ...]:
    """Shape of one example, e.g. (28, 28, 1) or (d,)."""
    return tuple(self.x_train.shape[1:])

  @property
  def y_test_flat(self) -> np.ndarray:
    """Test labels as scored: [N] (a sequence dataset's [M, T - 1] positions, flattened)."""
    return self.y_test.reshape(-1)

  @property
  def flipped(self) -> np.ndarray:
    """Boolean mask of training examples whose label was changed by label noise."""
    return self.y_train != self.y_train_clean


def common_config(name: str) -> ml_collections.ConfigDict:
  """Fields that every dataset accepts."""
  c = ml_collections.ConfigDict()
  c.name = name  # Registry name (see `sgd_phases.datasets.DATASETS`).
  c.seed = 0  # Data seed: subsampling, label noise and synthetic draws (not model init).
  c.label_noise = 0.0  # p: each train label -> uniformly chosen *other* class w.p. p.
  c.noisy_test = False  # Also flip test labels (independent stream); y_test_clean keeps truth.
  c.train_size = config_dict.placeholder(int)  # None = full train split; else balanced subsample.
  c.test_size = config_dict.placeholder(int)  # None = full test split; else balanced subsample.
  return c


def data_rng(seed: int, stream: str) -> np.random.Generator:
  """An independent numpy Generator for one named use of the data seed."""
  return np.random.default_rng([int(seed), zlib.crc32(stream.encode())])


def apply_label_noise(
    y: np.ndarray, p: float, num_classes: int, rng: np.random.Generator
) -> np.ndarray:
  """Replaces each label w.p. ``p`` by a uniformly chosen *other* class (returns a copy)."""
  y = np.asarray(y, dtype=np.int32)
  flip = rng.random(y.shape[0]) < p
  # An offset uniform in {1, ..., K-1} (mod K) gives every other class probability 1/(K-1).
  offset = rng.integers(1, num_classes, size=y.shape[0], dtype=np.int32)
  return np.where(flip, (y + offset) % num_classes, y).astype(np.int32)


def _balanced_quota(counts: np.ndarray, size: int) -> np.ndarray:
  """Per-class sample sizes summing to ``size``, as equal as the class counts allow."""
  quota = np.zeros_like(counts)
  remaining, open_classes = size, np.flatnonzero(counts > 0)
  # Water-filling: give every open class an equal share; classes that run out are closed and
  # their unused share goes to the others. Leftover units go to the lowest class ids.
  while remaining > 0 and open_classes.size:
    share, extra = divmod(remaining, open_classes.size)
    give = np.full(open_classes.size, share)
    give[:extra] += 1
    give = np.minimum(give, counts[open_classes] - quota[open_classes])
    quota[open_classes] += give
    remaining -= int(give.sum())
    open_classes = open_classes[quota[open_classes] < counts[open_classes]]
  return quota


def balanced_subsample(
    y: np.ndarray, size: int, num_classes: int, rng: np.random.Generator
) -> np.ndarray:
  """Sorted indices of a class-balanced random subset of ``size`` examples.

  Classes get ``size // K`` examples each (the remainder to the lowest class ids); a class with
  too few examples contributes all of them and the rest is spread over the other classes.
  Indices are returned sorted, so the subset keeps the original order of the split.
  """
  counts = np.bincount(y, minlength=num_classes)
  quota = _balanced_quota(counts, size)
  picked = [rng.choice(np.flatnonzero(y == k), size=q, replace=False)
            for k, q in enumerate(quota) if q > 0]
  return np.sort(np.concatenate(picked)) if picked else np.zeros(0, dtype=np.int64)


def parse_classes(classes: Any, num_original: int) -> list[list[int]]:
  """Validates a ``classes`` spec and returns explicit class groups (one per new label).

  ``"all"`` keeps every class; ``"first5_vs_last5"`` maps label -> int(label > 4); a list of
  groups such as ``[[2, 3, 4, 5, 6, 7], [0, 1, 8, 9]]`` maps group i -> label i (examples of
  classes in no group are dropped). A string holding such a list is parsed as well.
  """
  if isinstance(classes, str):
    spec = classes.strip()
    if spec == "all":
      return [[k] for k in range(num_original)]
    if spec == "first5_vs_last5":
      if num_original != 10:
        raise ValueError(f"classes='first5_vs_last5' needs 10 classes, dataset has {num_original}")
      return [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    try:
      classes = ast.literal_eval(spec)
    except (ValueError, SyntaxError) as e:
      raise ValueError(
          f"classes={spec!r}: expected 'all', 'first5_vs_last5' or a list of class groups"
      ) from e
  if not isinstance(classes, Sequence) or isinstance(classes, str) or len(classes) < 2:
    raise ValueError(f"classes={classes!r}: expected a list of at least 2 class groups")
  groups, seen = [], set()
  for group in classes:
    if isinstance(group, str) or not isinstance(group, Sequence) or not group:
      raise ValueError(f"classes={classes!r}: every group must be a non-empty list of class ids")
    if not all(isinstance(k, numbers.Integral) and not isinstance(k, bool) and
               0 <= k < num_original for k in group):
      raise ValueError(f"classes={classes!r}: class ids must be integers in [0, {num_original})")
    ids = [int(k) for k in group]
    if seen & set(ids) or len(set(ids)) != len(ids):
      raise ValueError(f"classes={classes!r}: groups overlap (a class id appears twice)")
    seen |= set(ids)
    groups.append(ids)
  return groups


def group_classes(y: np.ndarray, groups: list[list[int]], num_original: int) -> np.ndarray:
  """Maps original labels to group ids; examples in no group get -1."""
  table = np.full(num_original, -1, dtype=np.int32)
  for new_label, group in enumerate(groups):
    table[group] = new_label
  return table[np.asarray(y, dtype=np.int64)]


def _check_size(field: str, size: int | None, available: int, num_classes: int) -> None:
  if size is None:
    return
  if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
    raise ValueError(f"{field}={size!r} must be an integer or None")
  if size < num_classes or size > available:
    raise ValueError(
        f"{field}={size} must be between num_classes={num_classes} and the split size "
        f"{available}")


def check_label_noise(config: Mapping[str, Any], num_classes: int) -> None:
  """Raises ValueError naming ``label_noise`` unless 0 <= p < 1 - 1/K."""
  p = config["label_noise"]
  if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0 <= p < 1 - 1 / num_classes:
    raise ValueError(
        f"label_noise={p!r} must satisfy 0 <= p < 1 - 1/K = {1 - 1 / num_classes:g} "
        f"(K={num_classes}); at or above that the labels carry no signal")


def check_common(config: Mapping[str, Any], num_classes: int, n_train: int, n_test: int
                 ) -> None:
  """Validates label_noise, train_size and test_size (before any expensive work)."""
  check_label_noise(config, num_classes)
  _check_size("train_size", config["train_size"], n_train, num_classes)
  _check_size("test_size", config["test_size"], n_test, num_classes)


def to_unit_float(x: np.ndarray) -> np.ndarray:
  """uint8 inputs (images) -> float32 in [0, 1]; any other dtype -> float32 unchanged."""
  if x.dtype == np.uint8:
    return x.astype(np.float32) / np.float32(255.0)
  return x.astype(np.float32)


def group_and_finalize(config: Mapping[str, Any], x_train: np.ndarray, y_train: np.ndarray,
                       x_test: np.ndarray, y_test: np.ndarray, groups: list[list[int]],
                       num_original: int, to_float=None) -> Dataset:
  """Regroups the classes (:func:`group_classes`; examples in no group are dropped), then
  :func:`finalize`."""
  y_train, y_test = (group_classes(y, groups, num_original) for y in (y_train, y_test))
  keep_tr, keep_te = y_train >= 0, y_test >= 0
  if not keep_tr.all():
    x_train, y_train = x_train[keep_tr], y_train[keep_tr]
  if not keep_te.all():
    x_test, y_test = x_test[keep_te], y_test[keep_te]
  return finalize(config, x_train, y_train, x_test, y_test, len(groups), to_float)


def finalize(
    config: Mapping[str, Any],
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    num_classes: int,
    to_float=None,
) -> Dataset:
  """Subsamples, converts and adds label noise according to the common config fields.

  Args:
    config: resolved config (all common fields present).
    x_train, y_train, x_test, y_test: raw arrays, labels already in [0, num_classes).
    num_classes: K.
    to_float: optional function applied to the *selected* inputs (e.g. uint8 -> float32 / 255),
      so that large raw splits are converted only after subsampling.
  """
  check_label_noise(config, num_classes)
  seed = config["seed"]
  to_float = to_float or (lambda x: np.asarray(x, dtype=np.float32))
  splits = {}
  for split, x, y, size in (("train", x_train, y_train, config["train_size"]),
                            ("test", x_test, y_test, config["test_size"])):
    _check_size(f"{split}_size", size, y.shape[0], num_classes)
    if size is not None and size < y.shape[0]:
      idx = balanced_subsample(y, int(size), num_classes, data_rng(seed, f"{split}_subsample"))
      x, y = x[idx], y[idx]
    splits[split] = (np.ascontiguousarray(to_float(x)), np.asarray(y, dtype=np.int32))
  (x_tr, y_tr), (x_te, y_te) = splits["train"], splits["test"]
  p = float(config["label_noise"])
  y_tr_noisy = apply_label_noise(y_tr, p, num_classes, data_rng(seed, "train_noise"))
  y_te_noisy = (apply_label_noise(y_te, p, num_classes, data_rng(seed, "test_noise"))
                if config["noisy_test"] else y_te.copy())
  return Dataset(
      x_train=x_tr, y_train=y_tr_noisy, x_test=x_te, y_test=y_te_noisy,
      y_train_clean=y_tr, y_test_clean=y_te, num_classes=int(num_classes),
      name=str(config["name"]))
