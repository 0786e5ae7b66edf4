"""Seeds sharded over every device (and host): a 1-D mesh with axis ``"seed"``.

With one device everything here is the identity. With several (a multi-GPU node, a TPU VM
slice, or ``XLA_FLAGS=--xla_force_host_platform_device_count=4`` on CPU), the seed-stacked train
states, PRNG keys, labels and recording buffers are split over the mesh, the data and test set
are replicated, and each device runs the per-seed program (vmap or map) on its own seeds through
``jax.shard_map``: no communication during training, and the information measures are computed
where the predictions live.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

SEED_AXIS = "seed"


def seed_mesh() -> Mesh | None:
  """A mesh over all devices of all processes, or None with a single device."""
  if jax.device_count() == 1:
    return None
  # Auto axes: XLA propagates shardings outside shard_map (slicing off padding, measures).
  return jax.make_mesh((jax.device_count(),), (SEED_AXIS,),
                       axis_types=(jax.sharding.AxisType.Auto,))


def pad_seed_ids(ids: np.ndarray, mesh: Mesh | None) -> np.ndarray:
  """Pads ``ids`` with the next seed indices up to a multiple of the device count.

  The padding seeds are trained and then dropped: an uneven ``num_seeds`` costs a little
  compute instead of an error.
  """
  if mesh is None:
    return ids
  extra = (-len(ids)) % mesh.size
  return np.concatenate([ids, ids.max() + 1 + np.arange(extra)]).astype(ids.dtype)


def _put(tree: Any, sharding: NamedSharding) -> Any:
  """``tree`` placed with ``sharding``. On one process a plain ``device_put``; across processes
  (a mesh with devices of other hosts) every process holds the same full host value and
  builds its own shards of the global array (``make_array_from_callback``); arrays that are
  already global (outputs of earlier programs) are resharded by a jitted identity."""
  if sharding.is_fully_addressable:
    return jax.device_put(tree, sharding)

  def one(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return x if x.sharding == sharding else jax.jit(lambda a: a, out_shardings=sharding)(x)
    if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      return jax.random.wrap_key_data(one(jax.random.key_data(x)),
                                      impl=jax.random.key_impl(x))
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])

  return jax.tree.map(one, tree)


def put_seeded(tree: Any, mesh: Mesh | None) -> Any:
  """Leading axis split over the mesh; without one, on the default device (host arrays are
  copied in once, here, not at every program call; device arrays stay as they are)."""
  if mesh is None:
    return jax.device_put(tree)
  return _put(tree, NamedSharding(mesh, P(SEED_AXIS)))


def put_replicated(tree: Any, mesh: Mesh | None) -> Any:
  """A copy on every device of the mesh; without one, as :func:`put_seeded`."""
  if mesh is None:
    return jax.device_put(tree)
  return _put(tree, NamedSharding(mesh, P()))


def to_host(x: jax.Array | np.ndarray) -> np.ndarray:
  """numpy copy of a (possibly multi-host) sharded array: small results only."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    from jax.experimental import multihost_utils
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(x)


def to_device(x: Any, dtype: Any = None) -> jax.Array:
  """``x`` as a device array (``dtype``: of a host array), placed by ``jax.device_put``: a
  host array is copied in as it is, where ``jnp.asarray`` compiles and runs a program for it
  (one per shape). Device arrays are returned as they are."""
  if isinstance(x, jax.Array):
    return x if dtype is None else x.astype(dtype)
  return jax.device_put(np.asarray(x, dtype))


def shard_seeds(fn: Callable[[Any, Any, Any], Any], mesh: Mesh | None) -> Callable[..., Any]:
  """``fn(carry, seeded, shared)`` run per device on its block of seeds (identity without mesh).

  Prefix specs over the three pytrees: every leaf of ``carry`` and ``seeded`` is split on its
  leading (seed) axis, every leaf of ``shared`` is replicated; outputs are split by seed.
  """
  if mesh is None:
    return fn
  return jax.shard_map(fn, mesh=mesh, in_specs=(P(SEED_AXIS), P(SEED_AXIS), P()),
                       out_specs=P(SEED_AXIS), check_vma=False)
