"""Data-parallel forms of a step: ``jax.pmap``, and ``jax.jit`` over a device mesh.

Every form gives the numbers of the single-device step on the global batch (to float
rounding):

- **Mesh** (the form that scales to multi-host pods): ``mesh_step`` jits the step as
  written (``axis_name=None``) with the batch sharded on the mesh's ``"data"`` axis and the
  state and teacher variables replicated; XLA inserts the collectives. The step is
  written for the global batch, so BatchNorm statistics are global batch statistics with no
  help from the model. Each process feeds its own slice of the batch through
  ``shard_batch`` (``jax.make_array_from_process_local_data``) after
  ``jax.distributed.initialize()``; state and teacher variables go through ``replicate``.
- **pmap**: ``pmap_step`` maps a step built with ``axis_name`` over a leading device axis
  of the batch; the step averages gradients, BatchNorm statistics and metrics with
  ``lax.pmean``. BatchNorm normalises with device-local statistics unless the model's
  BatchNorm layers take the same ``axis_name`` (synchronised BatchNorm): build models with
  it to get the single-device numbers, e.g. ``kdjax.models.get("resnet8", 10,
  bn_axis_name=PMAP_AXIS)`` (every zoo model has the field). State and teacher variables
  are passed unmapped (``in_axes=None``) and the state comes back replicated
  (``out_axes=None``).
"""

from collections.abc import Callable, Sequence
from typing import Any

import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

from kdjax import batch as batch_lib

DATA_AXIS = "data"
PMAP_AXIS = "batch"

Step = Callable[..., Any]


def pmap_step(step: Step,
              *,
              axis_name: str = PMAP_AXIS,
              devices: Sequence[jax.Device] | None = None,
              donate_state: bool = True) -> Step:
  """Wraps a train or eval step built with ``axis_name`` in ``jax.pmap``.

  The returned function takes the same ``(state, teacher_vars, batch)`` as the step, with
  ``batch`` the whole (per-process) batch: it is split into ``[num_devices, B / num_devices,
  ...]`` here. ``state`` and ``teacher_vars`` are broadcast to every device; the outputs
  come back replicated over the mapped devices, so after the first call the state moves no
  more; pass teacher variables already replicated there (``replicate(teacher_vars,
  data_mesh(devices))``) or they are broadcast again at every call.

  Use it on one host with several local devices when the model's BatchNorm layers are
  built with the same ``axis_name``; otherwise prefer :func:`mesh_step`. On several CPU
  devices, keep the loop a few steps ahead (``kdjax.dispatch.DispatchWindow``): 32 ahead,
  XLA:CPU can deadlock.

  Args:
    step: from ``kdjax.step.make_train_step(..., axis_name=axis_name)`` or
      ``make_eval_step(..., axis_name=axis_name)``; a step built without the axis name would
      not average its gradients.
    axis_name: the collective axis the step was built with.
    devices: the local devices to map over (default: all).
    donate_state: donate the state's buffers (train steps); teacher variables never are.
      Turn it off for eval steps, or to keep using the state passed in.

  Returns:
    The pmapped step ``(state, teacher_vars, batch) -> outputs``, ``batch`` a dict of
    ``[B, ...]`` arrays; it raises ``ValueError`` when ``B`` is not divisible by the number
    of devices.

  Example:
    >>> from kdjax import models
    >>> from kdjax.state import create_train_state
    >>> from kdjax.step import make_eval_step
    >>> student = models.get("mlp_tiny", 10)
    >>> images = jax.random.normal(jax.random.key(0), (2 * jax.device_count(), 8, 8, 1))
    >>> variables = student.init(jax.random.key(1), images, train=False)
    >>> state = create_train_state(student, variables, optax.sgd(0.1), jax.random.key(2))
    >>> batch = {"image": images, "label": jnp.arange(len(images)) % 10}
    >>> step = pmap_step(make_eval_step(student, axis_name=PMAP_AXIS), donate_state=False)
    >>> metrics = step(state, None, batch)  # 2 examples per device
    >>> single = make_eval_step(student)(state, None, batch)  # one device, whole batch
    >>> bool(jnp.isclose(metrics["loss/ce"], single["loss/ce"]))
    True
  """
  devices = list(devices or jax.local_devices())
  mapped = jax.pmap(step, axis_name=axis_name, in_axes=(None, None, 0), out_axes=None,
                    devices=devices, donate_argnums=(0,) if donate_state else ())
  num_devices = len(devices)

  def pmapped_step(state, teacher_vars, batch):
    batch_lib.check_divisible(batch, num_devices, f"{num_devices} devices")
    split = jax.tree.map(
        lambda x: x.reshape(num_devices, -1, *x.shape[1:]), dict(batch))
    return mapped(state, teacher_vars, split)

  return pmapped_step


def data_mesh(devices: Sequence[jax.Device] | None = None,
              axis_name: str = DATA_AXIS) -> jax.sharding.Mesh:
  """A one-axis mesh over ``devices`` (default: every device of every process).

  The mesh :func:`mesh_step`, :func:`replicate` and :func:`shard_batch` take for data
  parallelism. The axis is ``Auto`` (``jax.make_mesh`` defaults to ``Explicit`` axes in
  current JAX): the step is written for global shapes and XLA partitions it.

  Args:
    devices: the devices, in batch order; every device of every process when ``None``.
    axis_name: the mesh axis's name.

  Returns:
    A ``jax.sharding.Mesh`` of shape ``{axis_name: len(devices)}``.

  Example:
    >>> mesh = data_mesh()
    >>> mesh.axis_names, mesh.size == jax.device_count()
    (('data',), True)
    >>> dict(data_mesh(jax.devices()[:1], axis_name="batch").shape)
    {'batch': 1}
  """
  devices = list(devices or jax.devices())
  return jax.make_mesh((len(devices),), (axis_name,),
                       axis_types=(jax.sharding.AxisType.Auto,), devices=devices)


def replicate(tree: Any, mesh: jax.sharding.Mesh) -> Any:
  """Places every array of ``tree`` on every device of ``mesh`` (state, teacher variables).

  Use it for what :func:`mesh_step` (or :func:`pmap_step`) leaves unsharded, once, before
  the first step. Works across processes (where ``jax.device_put`` cannot reach other
  processes' devices): each process must pass the same values, and provides them to its
  own devices. Typed PRNG keys stay typed.

  Args:
    tree: a pytree of arrays (host or device) and PRNG keys.
    mesh: the mesh, e.g. ``data_mesh()``.

  Returns:
    The same pytree of fully replicated global ``jax.Array`` s.

  Example:
    >>> mesh = data_mesh()
    >>> tree = replicate({"w": np.ones(3), "rng": jax.random.key(0)}, mesh)
    >>> tree["w"].sharding.is_fully_replicated, len(tree["w"].devices()) == mesh.size
    (True, True)
    >>> jax.dtypes.issubdtype(tree["rng"].dtype, jax.dtypes.prng_key)
    True
  """
  sharding = NamedSharding(mesh, P())

  def put(x):
    if jax.dtypes.issubdtype(jax.numpy.asarray(x).dtype, jax.dtypes.prng_key):
      return jax.random.wrap_key_data(put(jax.random.key_data(x)), impl=jax.random.key_impl(x))
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

  return jax.tree.map(put, tree)


def shard_batch(local_batch: batch_lib.Batch, mesh: jax.sharding.Mesh,
                axis_name: str = DATA_AXIS) -> dict[str, jax.Array]:
  """Assembles global batch arrays, sharded on ``axis_name``, from this process's slice.

  Use it on every batch fed to a :func:`mesh_step` on several processes (on one, passing
  the host batch straight to the step works too). On one process the local batch is the
  global batch. On several, each passes its own rows (process ``i`` holding the ``i``-th
  slice of the global batch, in device order).

  Args:
    local_batch: this process's batch, a dict of host arrays ``[B_local, ...]``.
    mesh: the mesh, e.g. ``data_mesh()``.
    axis_name: the mesh axis the batch is sharded on.

  Returns:
    A dict of global ``jax.Array`` s of leading size ``B_local * process_count``.

  Raises:
    ValueError: if ``B_local`` is not divisible by this process's devices in the mesh (or
      the batch has no ``"image"``, or its arrays disagree on the batch size).

  Example:
    >>> mesh = data_mesh()
    >>> n = jax.device_count()
    >>> batch = shard_batch({"image": np.zeros((2 * n, 8, 8, 1)), "label": np.arange(2 * n)},
    ...                     mesh)
    >>> batch["image"].shape == (2 * n, 8, 8, 1), batch["image"].sharding.spec
    (True, P('data',))
    >>> batch["image"].addressable_shards[0].data.shape  # one device's share
    (2, 8, 8, 1)
  """
  sharding = NamedSharding(mesh, P(axis_name))
  local_devices = len(mesh.local_devices)
  batch_lib.check_divisible(local_batch, local_devices, f"this process's {local_devices} "
                            f"devices")
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in local_batch.items()}


def mesh_step(step: Step,
              mesh: jax.sharding.Mesh,
              *,
              axis_name: str = DATA_AXIS,
              donate_state: bool = True) -> Step:
  """Jits a step (built with ``axis_name=None``) over ``mesh``: batch sharded, rest replicated.

  The data-parallel form to prefer: it gives the numbers of the single-device step on the
  global batch (BatchNorm statistics included) and scales to several processes. On several
  CPU devices, keep the loop a few steps ahead (``kdjax.dispatch.DispatchWindow``): 32
  ahead, XLA:CPU can deadlock.

  Args:
    step: a train or eval step from ``kdjax.step``.
    mesh: the device mesh, e.g. ``data_mesh()``.
    axis_name: the mesh axis the batch is sharded on.
    donate_state: donate the state's buffers (train steps); teacher variables never are.
      Turn it off for eval steps, or to keep using the state passed in.

  Returns:
    ``(state, teacher_vars, batch) -> outputs``, the outputs replicated; on several
    processes pass ``replicate``-d state and teacher variables and a ``shard_batch``-ed
    batch. It raises ``ValueError`` when the batch size is not divisible by the number of
    shards of ``axis_name``.

  Example:
    >>> from kdjax import models
    >>> from kdjax.state import create_train_state
    >>> from kdjax.step import make_eval_step
    >>> student = models.get("mlp_tiny", 10)
    >>> images = jax.random.normal(jax.random.key(0), (2 * jax.device_count(), 8, 8, 1))
    >>> variables = student.init(jax.random.key(1), images, train=False)
    >>> state = create_train_state(student, variables, optax.sgd(0.1), jax.random.key(2))
    >>> batch = {"image": images, "label": jnp.arange(len(images)) % 10}
    >>> step = mesh_step(make_eval_step(student), data_mesh(), donate_state=False)
    >>> metrics = step(state, None, batch)  # the batch is split over the devices
    >>> single = make_eval_step(student)(state, None, batch)  # one device, whole batch
    >>> bool(jnp.isclose(metrics["loss/ce"], single["loss/ce"]))
    True
    >>> metrics["loss/ce"].sharding.is_fully_replicated  # outputs come back replicated
    True
  """
  replicated = NamedSharding(mesh, P())
  jitted = jax.jit(step,
                   in_shardings=(replicated, replicated, NamedSharding(mesh, P(axis_name))),
                   out_shardings=replicated,
                   donate_argnums=(0,) if donate_state else ())
  num_shards = mesh.shape[axis_name]

  def sharded_step(state, teacher_vars, batch):
    batch_lib.check_divisible(batch, num_shards, f"the mesh's {num_shards} {axis_name!r} "
                              f"shards")
    return jitted(state, teacher_vars, batch)

  return sharded_step
