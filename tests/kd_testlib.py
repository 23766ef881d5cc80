"""Tiny models and data shared by the step tests (and the multi-process worker).

Small enough that a train step compiles in about a second on a CPU core.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from kdjax import models, objective, parallel
from kdjax import state as state_lib
from kdjax import step as step_lib

NUM_CLASSES = 5
IMAGE_SHAPE = (8, 8, 3)


class TinyConvNet(nn.Module):
  """conv-BN-ReLU → conv-ReLU (stride 2) → mean pool → dense; sows "stage1" and "stage2"."""

  num_classes: int = NUM_CLASSES
  width: int = 4
  bn_axis_name: str | None = None

  @nn.compact
  def __call__(self, x, train: bool):
    x = nn.Conv(self.width, (3, 3))(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                     axis_name=self.bn_axis_name)(x)
    x = nn.relu(x)
    self.sow("intermediates", "stage1", x)
    x = nn.relu(nn.Conv(2 * self.width, (3, 3), strides=2)(x))
    self.sow("intermediates", "stage2", x)
    return nn.Dense(self.num_classes)(jnp.mean(x, axis=(1, 2)))


class TinyMLP(nn.Module):
  """Two dense layers on flattened inputs; sows "hidden"."""

  num_classes: int = NUM_CLASSES
  hidden: int = 16

  @nn.compact
  def __call__(self, x, train: bool):
    del train
    h = nn.relu(nn.Dense(self.hidden)(x.reshape(x.shape[0], -1)))
    self.sow("intermediates", "hidden", h)
    return nn.Dense(self.num_classes)(h)


def make_batch(seed: int, size: int = 16, num_classes: int = NUM_CLASSES,
               masked: int = 0) -> dict[str, np.ndarray]:
  """A reproducible batch; the last ``masked`` examples are padding."""
  rng = np.random.default_rng(seed)
  batch = {
      "image": rng.normal(size=(size, *IMAGE_SHAPE)).astype(np.float32),
      "label": rng.integers(0, num_classes, size).astype(np.int32),
      "index": np.arange(size, dtype=np.int64) + seed * size,
  }
  if masked:
    batch["mask"] = np.arange(size) < size - masked
  return batch


def init(module: nn.Module, seed: int, image_shape=IMAGE_SHAPE):
  """Variables for ``module``, LeCun-normal kernels drawn with numpy from ``seed``.

  Flax's own ``init`` compiles its threefry initialisers for seconds per model on a CPU;
  these tests need reproducible variables of the right shapes, not Flax's exact draw.
  """
  shapes = jax.eval_shape(
      lambda: module.init(jax.random.key(0), jnp.zeros((1, *image_shape)), train=False))
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    name = path[-1].key
    if name == "kernel":
      fan_in = int(np.prod(leaf.shape[:-1]))
      return jnp.asarray(rng.normal(size=leaf.shape) / np.sqrt(fan_in), leaf.dtype)
    if name in ("scale", "var"):
      return jnp.ones(leaf.shape, leaf.dtype)
    return jnp.zeros(leaf.shape, leaf.dtype)

  return jax.tree_util.tree_map_with_path(draw, shapes)


def hinton_objective(num_steps: int = 1) -> objective.Objective:
  return objective.Objective(
      (objective.term("ce", 0.1), objective.term("kd", 0.9, temperature=4.0)),
      num_steps=num_steps)


def optimizer() -> optax.GradientTransformation:
  return optax.sgd(0.1, momentum=0.9)


def numpy_tree(tree) -> dict[str, np.ndarray]:
  """Flattens a pytree to ``{path: numpy array}``, e.g. to save or compare."""
  return {jax.tree_util.keystr(path): np.asarray(leaf)
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def distill_on_mesh(num_steps: int, batch_size: int = 16) -> dict[str, np.ndarray]:
  """Trains a student on a data mesh over every device of every process.

  Each process feeds its own slice of each global batch (``shard_batch``); on one process it
  feeds the whole batch. Returns the final student params and batch statistics.
  """
  mesh = parallel.data_mesh()
  teacher, student = TinyConvNet(width=6), TinyConvNet(width=3)
  opt = optimizer()
  train_state = state_lib.create_train_state(student, init(student, 1), opt, jax.random.key(0))
  train_state = parallel.replicate(train_state, mesh)
  teacher_vars = parallel.replicate(init(teacher, 0), mesh)
  train_step = parallel.mesh_step(
      step_lib.make_train_step(student, hinton_objective(), opt, teacher=teacher), mesh)
  count, index = jax.process_count(), jax.process_index()
  rows = slice(index * batch_size // count, (index + 1) * batch_size // count)
  for i in range(num_steps):
    local = {k: v[rows] for k, v in make_batch(i, size=batch_size, masked=3).items()}
    train_state, _ = train_step(train_state, teacher_vars, parallel.shard_batch(local, mesh))
  return numpy_tree({"params": train_state.params, "model_state": train_state.model_state})


def train_recipe(recipe, num_steps: int, learning_rate: float, teacher_scale: float):
  """Trains ``mlp_tiny`` (10 classes) with a method's recipe on one cached-teacher batch.

  Returns the final train state and the last step's metrics (``None`` for zero steps).
  """
  module = models.get("mlp_tiny", 10)
  images = jax.random.normal(jax.random.key(0), (16, 8, 8, 1))
  variables = module.init(jax.random.key(1), images, train=False)
  optimizer = recipe.optimizer_for(optax.sgd(learning_rate))
  train_state = state_lib.create_train_state(
      module, variables, optimizer, jax.random.key(2), output_tx=recipe.output_tx,
      aux_heads=recipe.aux_heads, sample_inputs=images)
  train_step = jax.jit(step_lib.make_train_step(
      module, recipe.objective, optimizer, output_tx=recipe.output_tx,
      aux_heads=recipe.aux_heads, log_schedules=recipe.log_schedules))
  batch = {"image": images, "label": jnp.arange(16) % 10,
           "teacher_logits": teacher_scale * jax.random.normal(jax.random.key(3), (16, 10))}
  metrics = None
  for _ in range(num_steps):
    train_state, metrics = train_step(train_state, None, batch)
  return train_state, metrics
