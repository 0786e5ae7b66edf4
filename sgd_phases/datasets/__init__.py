"""Dataset registry: ``get_dataset(config) -> Dataset`` (numpy arrays, host memory).

Synopsis::

    from sgd_phases import datasets
    config = datasets.default_config("mnist")        # ConfigDict, every field commented
    config.data_dir = str(datasets.shared_data_dir() / "mnist")  # offline IDX files
    config.label_noise = 0.1
    ds = datasets.get_dataset(config)                 # Dataset(x_train, y_train, ...)
    ds = datasets.get_dataset({"name": "ball2d_sinusoid", "seed": 1})  # missing -> defaults

Registry (``DATASETS``): ``mnist``, ``fashion_mnist``, ``cifar10`` (TFDS or the original files,
see :mod:`.tfds_images`), ``tfds:<name>[/<config>]`` (any TFDS image classification dataset),
``ball2d_sinusoid``, ``sinusoid_hd``, ``theorem1`` (numpy, see :mod:`.synthetic`), and your data:
``arrays`` (``from_arrays(x_train, y_train, x_test, y_test)``) and ``npz`` (a folder with
``train.npz`` and ``test.npz``), see :mod:`.user_data`; token sequences for next-token prediction:
``icl_markov``, ``markov_source``, ``text`` (see :mod:`.sequences`). Common fields: ``name``,
``seed`` (data seed), ``label_noise``,
``noisy_test``, ``train_size``, ``test_size`` (see :func:`.base.common_config`). Any bad field
raises one ``ValueError`` that names it.

Identity: a dataset read from outside its config (files, TFDS, arrays) has a ``fingerprint``
field, the hash of its content, filled in by :func:`pin` (how each computes it:
``FINGERPRINTS``); ``get_dataset`` refuses a given fingerprint that is not the data's.
``shared_data_dir()`` is the shared real-data folder (``SGD_PHASES_SHARED_DATA=none`` hides it).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import ml_collections

from sgd_phases.datasets import sequences, synthetic, tfds_images, user_data
from sgd_phases.datasets.base import Dataset
from sgd_phases.datasets.user_data import InMemoryData, from_arrays

__all__ = ["DATASETS", "Dataset", "InMemoryData", "default_config", "from_arrays",
           "get_dataset", "pin", "resolve_config", "shared_data_dir", "with_data"]

COMMON_FIELDS = ("seed", "label_noise", "noisy_test", "train_size", "test_size")

Builder = Callable[[Mapping[str, Any]], Dataset]

DATASETS: dict[str, Builder] = {
    "mnist": tfds_images.build_image_dataset,
    "fashion_mnist": tfds_images.build_image_dataset,
    "cifar10": tfds_images.build_image_dataset,
    "ball2d_sinusoid": synthetic.ball2d_sinusoid,
    "sinusoid_hd": synthetic.sinusoid_hd,
    "theorem1": synthetic.theorem1,
    "arrays": user_data.build_arrays,
    "npz": user_data.build_npz,
    **{n: sequences.build for n in sequences.SEQUENCE_DATASETS},
}

# How each dataset read from outside its config computes its content fingerprint (resolved
# config -> 16 hex digits; it reads the data, cached per file stamp). Every other dataset is
# generated from its config, which is then its whole identity.
Fingerprint = Callable[[Mapping[str, Any]], str | None]
FINGERPRINTS: dict[str, Fingerprint] = {
    **{n: tfds_images.fingerprint for n in tfds_images.IMAGE_DATASETS},
    tfds_images.TFDS_PREFIX: tfds_images.fingerprint,  # every tfds:<name>
    "arrays": user_data.fingerprint,
    "npz": user_data.fingerprint,
    "text": sequences.fingerprint,
}

_DEFAULT_CONFIGS: dict[str, Callable[[], ml_collections.ConfigDict]] = {
    **{n: functools.partial(tfds_images.default_config, n) for n in tfds_images.IMAGE_DATASETS},
    "ball2d_sinusoid": synthetic.default_config_ball2d_sinusoid,
    "sinusoid_hd": synthetic.default_config_sinusoid_hd,
    "theorem1": synthetic.default_config_theorem1,
    "arrays": functools.partial(user_data.default_config, "arrays"),
    "npz": functools.partial(user_data.default_config, "npz"),
    **{n: functools.partial(sequences.default_config, n) for n in sequences.SEQUENCE_DATASETS},
}


def _check_name(name: Any) -> str:
  if tfds_images.is_tfds_name(name):
    return name
  if not isinstance(name, str) or name not in DATASETS:
    raise ValueError(f"name={name!r} is not a registered dataset; choose from {sorted(DATASETS)} "
                     "or tfds:<name>[/<config>]")
  return name


def default_config(name: str) -> ml_collections.ConfigDict:
  """Every field dataset ``name`` accepts, with its default (one comment per field)."""
  if tfds_images.is_tfds_name(_check_name(name)):
    return tfds_images.default_config_tfds(name)
  return _DEFAULT_CONFIGS[name]()


def resolve_config(config: Mapping[str, Any] | ml_collections.ConfigDict) -> dict[str, Any]:
  """Fills missing fields from ``default_config(config['name'])``; rejects unknown fields."""
  if isinstance(config, (ml_collections.ConfigDict, ml_collections.FrozenConfigDict)):
    given = config.to_dict() if hasattr(config, "to_dict") else dict(config)
  elif isinstance(config, Mapping):
    given = dict(config)
  else:
    raise ValueError(f"config must be a ConfigDict or mapping, got {type(config).__name__}")
  if "name" not in given:
    raise ValueError(f"name is missing from the dataset config; choose from {sorted(DATASETS)}")
  defaults = default_config(given["name"]).to_dict()
  unknown = sorted(set(given) - set(defaults))
  if unknown:
    raise ValueError(f"unknown dataset config field(s) {unknown} for name={given['name']!r}; "
                     f"accepted: {sorted(defaults)}")
  resolved = {**defaults, **given}
  seed = resolved["seed"]
  if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
    raise ValueError(f"seed={seed!r} must be a non-negative integer")
  if not isinstance(resolved["noisy_test"], bool):
    raise ValueError(f"noisy_test={resolved['noisy_test']!r} must be a bool")
  return resolved


def get_dataset(config: Mapping[str, Any] | ml_collections.ConfigDict) -> Dataset:
  """Builds the dataset described by ``config`` (a ConfigDict or plain mapping); refused when
  its ``fingerprint``, where given, is not its data's (:func:`pin`)."""
  resolved = pin(resolve_config(config))
  if tfds_images.is_tfds_name(resolved["name"]):
    return tfds_images.build_image_dataset(resolved)
  return DATASETS[resolved["name"]](resolved)


def _where(config: Mapping[str, Any]) -> str:
  fields = [f for f in ("path", "data_dir", "tfds_dir") if config.get(f)]
  return ", ".join(f"{f}={config[f]!r}" for f in fields) or f"name={config['name']!r}"


def pin(config: Mapping[str, Any] | ml_collections.ConfigDict) -> dict[str, Any]:
  """The dataset ``config`` (a dict) with ``fingerprint``, the identity of its data's content,
  filled in; refused (ValueError naming ``fingerprint``) when a given one is not the data's.

  The one place where a dataset's content joins its config: each dataset read from outside
  its config declares in ``FINGERPRINTS`` how its fingerprint is computed (the bytes of a
  text file, the arrays of npz files, ...); a generated dataset is returned unchanged (its
  config is its content). A run pins its dataset when it starts (:func:`with_data`), so the
  fingerprint is part of its identity: changed data is another run, never old numbers.
  """
  resolved = resolve_config(config)
  name = resolved["name"]
  fingerprint_of = FINGERPRINTS.get(
      tfds_images.TFDS_PREFIX if tfds_images.is_tfds_name(name) else name)
  found = fingerprint_of(resolved) if fingerprint_of else None
  out = dict(config.to_dict() if isinstance(config, ml_collections.ConfigDict) else config)
  if found is None:
    return out
  given = resolved.get("fingerprint")
  if given is not None and given != found:
    raise ValueError(f"fingerprint={given!r}: the data read from {_where(resolved)} now has "
                     f"fingerprint {found!r} (they changed since this config was pinned)")
  out["fingerprint"] = found
  return out


def with_data(config: ml_collections.ConfigDict, data: InMemoryData | None
              ) -> ml_collections.ConfigDict:
  """A copy of a run's or experiment's ``config`` whose ``dataset`` is ``data`` (arrays from
  :func:`from_arrays`; None: the config's own dataset) and whose content fingerprint is filled
  in (:func:`pin`).

  With ``data``: a ``dataset`` that already names ``arrays`` keeps all its fields (the
  fingerprint becomes ``data``'s); any other keeps on ``data.config()`` every field that
  arrays accept (seed, label_noise, noisy_test, train_size, test_size and ``classes``: e.g. an
  MNIST task's ``first5_vs_last5`` groups 10-class arrays into K = 2).
  """
  config = config.copy_and_resolve_references()
  if data is not None:
    if not isinstance(data, InMemoryData):
      raise ValueError(f"dataset: expected the result of datasets.from_arrays, got "
                       f"{type(data).__name__}")
    old = config.dataset.to_dict()
    if old.get("name") == "arrays":
      new = {**old, "fingerprint": data.fingerprint}
    else:
      new = data.config().to_dict()
      new.update({k: old[k] for k in new if k in old and k not in ("name", "fingerprint")})
    config.dataset = default_config("arrays")
    config.dataset.update(new)
  config.dataset.update(pin(config.dataset))
  return config


SHARED_DATA_ENV = "SGD_PHASES_SHARED_DATA"  # a folder, or "none": as if there were none


def shared_data_dir() -> Path | None:
  """The shared real-data folder (``$SGD_PHASES_SHARED_DATA``, else ``<repo>/../shared/data``).

  Returns None when neither exists (e.g. in a fresh clone), or when ``SGD_PHASES_SHARED_DATA``
  is ``none``: then everything behaves as in a clone without it (experiments fall back to
  synthetic tasks or TFDS, tests that need it skip). It holds ``mnist/`` and
  ``fashion_mnist/`` IDX folders usable as ``data_dir``.
  """
  env = os.environ.get(SHARED_DATA_ENV)
  if env and env.strip().lower() == "none":
    return None
  candidates = [Path(env).expanduser()] if env else []
  candidates.append(Path(__file__).resolve().parents[2].parent / "shared" / "data")
  return next((c for c in candidates if c.is_dir()), None)
