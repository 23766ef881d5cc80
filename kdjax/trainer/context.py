"""What the stages of one run share: the config, the dataset, the device mesh, placement.

``RunContext`` reads the dataset's description once, builds the mesh when there are several
devices, and knows where each process's share of a batch goes; it loads teachers and
evaluates stacked students on the test split. It trains nothing and writes no file.
"""

from collections.abc import Iterable, Mapping
import dataclasses
import os
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm

from kdjax import checkpoints, data, evaluation, models, parallel, teacher_cache
from kdjax.trainer import workdir as workdir_lib


@dataclasses.dataclass(frozen=True)
class Teacher:
  """A loaded teacher: its name in the config, its model name, module and variables.

  Example:
    >>> from kdjax import models
    >>> module = models.get("mlp_tiny", 10)
    >>> Teacher("teacher", "mlp_tiny", module, variables={}).model
    'mlp_tiny'
  """

  name: str
  model: str
  module: Any
  variables: Any


def input_workers(configured: int, resumed_with: int | None = None, *,
                  workers_allowed: bool) -> int:
  """The training pipeline's worker processes: ``dataset.worker_count``, auto resolved.

  Auto (-1) is 0 on a CPU backend, where the step limits training (decoding in the
  trainer's process cost 1–5 % of a fused KD step on 2 cores), and half the host's cores,
  at most 8, on GPU and TPU hosts, where the input pipeline does (CIFAR-10 resnet56 →
  resnet8 on an H100 with a 16-core host: 3,484 img/s decoding in the trainer's process,
  21,457 with 8 workers). Worker processes need absl flags parsed: the binary says so with
  ``workers_allowed``; elsewhere, e.g. in a notebook, auto decodes in the trainer's process.

  Args:
    configured: ``dataset.worker_count``: a count, or -1 for auto.
    resumed_with: the count a checkpoint was saved with, if resuming: an input iterator's
      state restores only into one with the same count, so auto keeps it.
    workers_allowed: whether grain may start worker processes here.

  Raises:
    ValueError: if an explicit count differs from the checkpoint's, or asks for workers
      where they are not allowed.

  Example:
    >>> input_workers(-1, workers_allowed=False)  # a notebook: decoded in this process
    0
    >>> input_workers(-1, resumed_with=3, workers_allowed=True)  # auto keeps a resumed count
    3
  """
  if configured == -1 and resumed_with is None:
    if jax.default_backend() == "cpu" or not workers_allowed:
      return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return min(max((cores or 1) // 2, 1), 8)
  if configured == -1:
    count = resumed_with
  elif resumed_with is not None and configured != resumed_with:
    raise ValueError(f"dataset.worker_count={configured}, but the checkpoint to resume was "
                     f"saved with {resumed_with} workers, and an input pipeline's state "
                     f"restores only with the same count; set dataset.worker_count="
                     f"{resumed_with} (or -1, auto, which keeps it).")
  else:
    count = configured
  if count and not workers_allowed:
    raise ValueError(f"dataset.worker_count={configured} means {count} grain worker "
                     f"processes here (the checkpoint's count when resuming), which need absl "
                     f"flags parsed: run through launch/train.py, or pass "
                     f"input_workers_allowed=True to train_and_evaluate after parsing them.")
  return count


def nonfinite_leaves(tree: Any) -> list[str]:
  """Paths of the floating leaves of ``tree`` holding a NaN or an infinity.

  Example:
    >>> nonfinite_leaves({"w": np.array([1.0, np.nan]), "count": np.array(3)})
    ["['w']"]
  """
  return [jax.tree_util.keystr(path)
          for path, leaf in jax.tree_util.tree_flatten_with_path(jax.device_get(tree))[0]
          if np.issubdtype(np.asarray(leaf).dtype, np.floating)
          and not np.all(np.isfinite(leaf))]


def abstract_variables(module: Any, sample: jax.Array) -> Any:
  """The shapes and dtypes of ``module``'s variables for inputs like ``sample``, unallocated.

  Example:
    >>> from kdjax import models
    >>> shapes = abstract_variables(models.get("mlp_tiny", 10), jnp.zeros((1, 8, 8, 1)))
    >>> sorted(shapes)
    ['batch_stats', 'params']
  """
  return jax.eval_shape(lambda: module.init(jax.random.key(0), sample, train=False))


class RunContext:
  """The state shared by the stages of one run: config, workdir, dataset, mesh.

  Args:
    config: a run config as ``kdjax.trainer.validate`` returns it (lengths in steps).
    workdir: the run's directory.
    input_workers_allowed: whether grain may start input worker processes (absl flags
      are parsed: the binary).

  Raises:
    ValueError: if a batch size does not split over the devices.

  Example:
    >>> from kdjax import config as base
    >>> context = RunContext(base.get_config(), "/tmp/run")
    >>> context.info.name, context.primary
    ('digits', True)
  """

  def __init__(self, config: ml_collections.ConfigDict, workdir: str, *,
               input_workers_allowed: bool = False):
    self.config = config
    self.workdir = workdir
    self.input_workers_allowed = input_workers_allowed
    ds = config.dataset
    self.data_dir = ds.data_dir or data.default_data_dir()
    self.info = data.dataset_info(ds.name, data_dir=self.data_dir, download=ds.download)
    self.sample = jnp.zeros((1, *self.info.image_shape), jnp.float32)
    self.mesh = parallel.data_mesh() if jax.device_count() > 1 else None
    # With several processes (multi-host), only the first writes the run's JSON files,
    # metrics and reports; checkpoints and exports are written by all (orbax).
    self.primary = jax.process_index() == 0
    devices = (f"{jax.device_count()} devices" if jax.process_count() == 1 else
               f"{jax.device_count()} devices of {jax.process_count()} processes")
    for field in ("batch_size", "eval_batch_size"):
      if ds[field] % jax.device_count():
        raise ValueError(f"dataset.{field}={ds[field]} is not divisible by the {devices}.")
    # Batch sizes are global; each process reads its share of every batch.
    self.batch_size = ds.batch_size // jax.process_count()
    self.eval_batch_size = ds.eval_batch_size // jax.process_count()

  def report(self, message: str) -> None:
    """A line for the person at the terminal (printed above the progress bar) and the log."""
    logging.info(message)
    tqdm.tqdm.write(message)

  def train_iterator(self, worker_count: int) -> Any:
    """This process's shuffled training batches (a checkpointable grain iterator)."""
    ds = self.config.dataset
    return data.train_iterator(ds.name, data_dir=self.data_dir, batch_size=self.batch_size,
                               seed=self.config.seed, augmentation=ds.augmentation,
                               download=ds.download, worker_count=worker_count)

  def eval_batches(self, split: str = "test") -> Iterable[dict[str, np.ndarray]]:
    """This process's share of every batch of ``split``, in order, the last one padded."""
    ds = self.config.dataset
    return data.eval_batches(ds.name, data_dir=self.data_dir, split=split,
                             batch_size=self.eval_batch_size, download=ds.download)

  def place(self, tree: Any) -> Any:
    """``tree`` replicated over the mesh's devices (as it is on one device)."""
    return tree if self.mesh is None else parallel.replicate(tree, self.mesh)

  def place_batch(self, batch: Mapping[str, np.ndarray]) -> Any:
    """This process's share of a batch, sharded over the mesh as part of the global batch."""
    return dict(batch) if self.mesh is None else parallel.shard_batch(batch, self.mesh)

  def compile(self, fn: Any, donate_state: bool) -> Any:
    """``fn(state, teacher_vars, batch)`` jitted, over the mesh when there is one."""
    if self.mesh is None:
      return jax.jit(fn, donate_argnums=(0,) if donate_state else ())
    return parallel.mesh_step(fn, self.mesh, donate_state=donate_state)

  def provenance(self, model: str) -> dict[str, Any]:
    """What an export of ``model`` trained here records (and a loader of it expects)."""
    return {"model": model, "num_classes": self.info.num_classes, "dataset": self.info.name}

  def load_teacher(self, stage: str, name: str) -> Teacher:
    """Teacher ``name`` of ``stage``: its export, refused if any of its values is not finite."""
    model, directory = workdir_lib.teacher_source(self.config, self.workdir, stage, name)
    module = models.get(model, self.info.num_classes)
    variables = checkpoints.load_network(
        directory, abstract_variables(module, self.sample), self.provenance(model))
    bad = nonfinite_leaves(variables)
    if bad:
      raise ValueError(f"teacher {name!r} in {directory!r} has non-finite values in "
                       f"{', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}; it cannot teach.")
    return Teacher(name, model, module, variables)

  def evaluate(self, eval_fn: Any, states: Any,
               teacher_logits: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Mean eval metrics over every test example, per student: ``{name: [num_students]}``.

    ``teacher_logits`` (the teachers' logits of every test example,
    ``kdjax.teacher_cache``) are added to each batch, for an ``eval_fn`` built on cached
    logits.
    """
    batches = self.eval_batches()
    if teacher_logits is not None:
      batches = (teacher_cache.add_teacher_logits(b, teacher_logits) for b in batches)
    return evaluation.evaluate(eval_fn, states, None, map(self.place_batch, batches))
