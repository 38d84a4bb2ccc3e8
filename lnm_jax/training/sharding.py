"""Data parallelism over a ``Mesh`` of all devices (and hosts), with ``NamedSharding``.

The batch is split along a ``data`` axis; the train state is replicated. Under ``jax.jit``
the program is written for the global batch, so BatchNorm's batch statistics and the loss
are over the global batch: sharded training computes what one device would on the same
global batch. Multi-host: :func:`initialize` calls ``jax.distributed.initialize``; each
process then feeds its own rows of every global batch (:func:`shard_batch`).
"""

from __future__ import annotations

import collections
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"


def initialize(
    coordinator_address: str | None = None, num_processes: int | None = None, process_id: int | None = None
) -> None:
    """Starts JAX's distributed runtime when asked for (arguments, or the JAX_COORDINATOR_ADDRESS /
    JAX_NUM_PROCESSES / JAX_PROCESS_ID environment variables; cluster auto-detection otherwise)."""
    coordinator_address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS")
    if num_processes is None and "JAX_NUM_PROCESSES" in os.environ:
        num_processes = int(os.environ["JAX_NUM_PROCESSES"])
    if process_id is None and "JAX_PROCESS_ID" in os.environ:
        process_id = int(os.environ["JAX_PROCESS_ID"])
    jax.distributed.initialize(
        coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id
    )


def data_mesh(devices=None) -> Mesh:
    """A 1-D mesh over every device of every process."""
    return Mesh(np.asarray(jax.devices() if devices is None else devices), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Arrays split along their first (batch) axis over ``mesh``'s devices."""
    return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    """Arrays held whole on every device of ``mesh`` (the train state)."""
    return NamedSharding(mesh, P())


def indivisible_batches(sizes: dict[str, int], remedy: str = "") -> list[str]:
    """One line per config field of ``sizes`` (field -> batch size) that the devices a batch is
    sharded over (every device, :func:`data_mesh`) do not divide, ``remedy`` appended; [] on one
    device. What training and pretraining check before they write anything (helper-88,
    helper-91: :func:`check_batch_size` had said it after the run's records)."""
    n = jax.device_count()
    if n == 1:
        return []
    return [
        f"{field}: {size} is not divisible by the {n} devices each batch is sharded over; give a multiple of {n}"
        + remedy
        for field, size in sizes.items()
        if int(size) % n
    ]


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
    n = mesh.devices.size
    if batch_size % n:
        raise ValueError(f"batch size {batch_size} is not divisible by the {n} devices of the mesh")


def shard_batch(batch: dict, mesh: Mesh, *, local: bool = False) -> dict:
    """A numpy batch -> globally sharded jax.Arrays. ``local=False``: the global batch (the same
    on every process), of which each process contributes the rows of its own devices;
    ``local=True``: this process's rows only (process p holds rows p*r to (p+1)*r - 1)."""
    sharding = batch_sharding(mesh)
    n_proc, pid = jax.process_count(), jax.process_index()

    def put(x):
        x = np.asarray(x)
        if local:
            return jax.make_array_from_process_local_data(sharding, x, (x.shape[0] * n_proc, *x.shape[1:]))
        rows = x.shape[0] // n_proc
        part = x[pid * rows : (pid + 1) * rows] if n_proc > 1 else x
        return jax.make_array_from_process_local_data(sharding, part, x.shape)

    return {k: put(v) for k, v in batch.items()}


def place_batch(batch: dict, mesh: Mesh | None, *, local: bool = False) -> dict:
    """A numpy batch on the default device (``mesh`` None) or sharded over ``mesh``
    (:func:`shard_batch`, ``local`` as there)."""
    return jax.device_put(batch) if mesh is None else shard_batch(batch, mesh, local=local)


def prefetch_to_device(
    batches: Iterable[dict], put: Callable[[dict], dict], size: int = 2
) -> Iterator[tuple[dict, dict]]:
    """Yields ``(host_batch, device_batch)`` with ``size`` batches already transferred:
    ``put`` (``device_put`` / :func:`shard_batch`) is asynchronous, so the next batches' copies
    overlap the current step."""
    queue: collections.deque = collections.deque()
    it = iter(batches)
    for host in it:
        queue.append((host, put(host)))
        if len(queue) >= size:
            break
    while queue:
        yield queue.popleft()
        for host in it:
            queue.append((host, put(host)))
            break


def replicate(tree, mesh: Mesh):
    """``tree`` replicated over ``mesh``: its arrays placed so; shape structs (an abstract
    state, what a checkpoint is restored into) given that sharding."""
    rep = replicated(mesh)
    if any(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree_util.tree_leaves(tree)):
        return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=rep), tree)
    return jax.device_put(tree, rep)


def placed_as(values: Any, template: Any) -> Any:
    """``values``' host (NumPy) leaves placed as ``template``'s leaves are: on their shardings
    where they are committed arrays or shape structs that carry one, uncommitted on the default
    device where they are uncommitted arrays (a fresh state) or have none; device arrays are
    kept as they are. So a state restored from a checkpoint, or given pretrained branches, is
    placed as the fresh one and its train step is the same program: committed inputs add
    sharding annotations, and XLA would compile the step a second time for them (the
    persistent compilation cache missing; ~5 s for the tests' ResNet-10 pair on 2 cores)."""

    def place(x, t):
        if not isinstance(x, np.ndarray):
            return x
        committed = getattr(t, "committed", True)  # a ShapeDtypeStruct places as its sharding says
        return jax.device_put(x, getattr(t, "sharding", None) if committed else None)

    return jax.tree.map(place, values, template)


def fully_addressable(tree) -> bool:
    """Whether this process holds every array of ``tree`` whole (one process, or arrays not
    sharded across processes): what may be copied to its host as plain NumPy arrays."""
    return all(not isinstance(x, jax.Array) or x.is_fully_addressable for x in jax.tree_util.tree_leaves(tree))


def to_host(x) -> np.ndarray:
    """A (possibly multi-host sharded) array as one numpy array on every process."""
    if jax.process_count() > 1:
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)
