"""Data read from files: byte hashes (content fingerprints) and caches that notice a changed file.

Every dataset read from files (``npz``, ``text``, CIFAR-10 and MNIST-format files via
``data_dir``) is loaded through :func:`cached_by_stamp`: the result is kept in memory keyed by
the (size, mtime) of its local files or the (size, generation) of its ``gs://`` objects, so a
file rewritten under the same path is read again, never answered from memory; a file that
cannot be stamped is read every time. Loaders return
the content's fingerprint (:func:`digest`) next to the arrays; ``datasets.pin`` records it in
the dataset config.

    @sources.cached_by_stamp(maxsize=2)
    def load(path: str) -> tuple[np.ndarray, str]: ...
    arrays, fp = load(path, files=[path])       # read once per (size, mtime) of `files`
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from sgd_phases import io_lib

T = TypeVar("T")


def digest(parts: Iterable[bytes | str]) -> str:
  """sha256 of the concatenated ``parts`` (str as UTF-8), 16 hex digits: a content fingerprint."""
  h = hashlib.sha256()
  for p in parts:
    h.update(p.encode() if isinstance(p, str) else p)
  return h.hexdigest()[:16]


def _object_version(uri: str) -> tuple[Any, ...] | None:
  """(size, generation) of a ``gs://`` object: its generation changes on every overwrite."""
  import fsspec  # pylint: disable=g-import-not-at-top  (comes with gcsfs)
  fs, path = fsspec.core.url_to_fs(uri)
  fs.invalidate_cache(path)
  info = fs.info(path)
  return (info["size"], info["generation"]) if info.get("generation") else None


def stamp(files: Sequence[Any]) -> tuple[Any, ...] | None:
  """(path, size, mtime_ns) of every local file, (uri, size, generation) of a ``gs://`` object;
  None when a file cannot be stamped (then nothing may be cached)."""
  out = []
  for f in files:
    f = os.fspath(f)
    try:
      if io_lib.is_local(f):
        st = os.stat(f)
        version = (st.st_size, st.st_mtime_ns)
      else:
        version = _object_version(f) if f.startswith("gs://") else None
    except Exception:  # noqa: BLE001  (any failure: no stamp, read again, never stale)
      version = None
    if version is None:
      return None
    out.append((f, *version))
  return tuple(out)


def cached_by_stamp(maxsize: int) -> Callable[[Callable[..., T]], Callable[..., T]]:
  """Decorates ``load(*args)`` into ``load(*args, files=[...])``, cached on ``args`` and the
  :func:`stamp` of ``files`` (the files the result is read from); uncached without a stamp.
  ``load.cache_clear()`` empties the cache."""
  def decorate(load: Callable[..., T]) -> Callable[..., T]:
    cached = functools.lru_cache(maxsize=maxsize)(lambda st, *args: load(*args))

    @functools.wraps(load)
    def wrapper(*args: Any, files: Sequence[Any]) -> T:
      st = stamp(files)
      return load(*args) if st is None else cached(st, *args)

    wrapper.cache_clear = cached.cache_clear
    return wrapper
  return decorate
