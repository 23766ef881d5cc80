"""Building a stage into a value: everything its training loop runs, and nothing it does.

``build_stage`` loads the stage's teachers and checks their test accuracy (refusing one
below ``config.min_teacher_accuracy_over_chance`` times chance), builds the
student model and its method's recipe, the stacked initial states of its seeds, the teacher
cache, and compiles the train and eval programs. It writes no file and runs no loop.

The compiled train program is the public composition of the step layer:
``finite_guard.guard(mixup.with_mixup(sweep.make_sweep_train_step(...)))`` (mixup only
when the stage asks for it).
"""

import enum
import time
from typing import Any, NamedTuple
import zlib

import jax
import ml_collections
import numpy as np
import optax

from kdjax import (
    checkpoints,
    finite_guard,
    initializers,
    methods,
    mixup,
    models,
    optimizers,
    sweep,
    teacher_cache,
)
from kdjax import state as state_lib
from kdjax import step as step_lib
from kdjax.trainer import context as context_lib
from kdjax.trainer import run_config
from kdjax.trainer import workdir as workdir_lib


class Stream(enum.IntEnum):
  """The ``jax.random.fold_in`` tags of the random streams derived from a seed.

  Example:
    >>> int(Stream.MIXUP)
    3
  """

  INITIALIZATION = 1  # a student's initial variables (from its seed)
  STUDENT_RNG = 2  # a student's in-step randomness (dropout, DGKD's drops)
  MIXUP = 3  # the mixup ratios (from the run's seed, then the stage's name)


class Stage(NamedTuple):
  """A stage ready to train: its programs, initial states and what its records need.

  Attributes:
    name: the stage's name in ``config.stages``.
    config: the stage's config.
    directory: the stage's directory in the workdir.
    seeds: the students' seeds.
    initial_states: the students' train states, stacked (``kdjax.sweep``), unplaced.
    teacher_vars: the teachers' variables, placed on the devices (``None``: no teacher).
    teacher_accuracy: each teacher's test accuracy, by name.
    train_cache: the teachers' logits of every training example (as sparse targets when
      the method asks, ``Recipe.sparse_cache``), or ``None``.
    test_cache: the teachers' logits of every test example (``None``: no teacher), which
      the evaluations read instead of running the teachers each time.
    train_program: compiled ``((states, health), teacher_vars, batch) -> ((states,
      health), metrics)``, the carry donated.
    eval_program: compiled ``(states, None, batch) -> metrics``, the batch carrying the
      teachers' test logits (``kdjax.teacher_cache.add_teacher_logits``) when there are
      teachers.
    checked: the values the non-finite guard checks (``finite_guard.checked_names``).
    provenance: what the stage's exports record about the network.

  Example: see ``build_stage``.
  """

  name: str
  config: ml_collections.ConfigDict
  directory: str
  seeds: list[int]
  initial_states: state_lib.TrainState
  teacher_vars: Any
  teacher_accuracy: dict[str, float]
  train_cache: np.ndarray | teacher_cache.SparseCache | None
  test_cache: np.ndarray | None
  train_program: Any
  eval_program: Any
  checked: tuple[str, ...]
  provenance: dict[str, Any]


def build_stage(context: context_lib.RunContext, name: str) -> Stage:
  """Builds stage ``name`` of the run into a ``Stage``: loaded, checked and compiled.

  Raises:
    ValueError: on a teacher with non-finite parameters or training logits, or a test
      accuracy below ``config.min_teacher_accuracy_over_chance`` times chance.
    FileNotFoundError: when a teacher's or ``init_from``'s export is missing.

  Example:
    >>> from kdjax import config as base
    >>> config = base.get_config()
    >>> config.stages.teacher = base.stage("mlp_tiny", "scratch", num_steps=4)
    >>> context = context_lib.RunContext(run_config.validate(config), "/tmp/run")
    >>> stage = build_stage(context, "teacher")
    >>> stage.seeds, stage.teacher_vars is None, stage.checked[0]
    ([0], True, 'teacher_logits')
  """
  config, stage_config = context.config, context.config.stages[name]
  teachers = [context.load_teacher(t) for t in stage_config.teachers]
  teacher_accuracy = {}
  for teacher in teachers:
    teacher_accuracy[teacher.name] = _teacher_accuracy(context, teacher)
    context.report(f"stage {name}: teacher {teacher.name} ({teacher.model}) has test accuracy "
                   f"{teacher_accuracy[teacher.name]:.4f}")
    _check_teacher_accuracy(context, name, teacher.name, teacher_accuracy[teacher.name])
  teacher_modules = tuple(t.module for t in teachers) or None
  teacher_vars = context.place(tuple(t.variables for t in teachers)) if teachers else None

  module = _student_model(stage_config, context.info.num_classes)
  method = methods.get(stage_config.method)
  recipe = method.build(stage_config.loss, stage_config.num_steps,
                        _teacher_feature_shapes(context, teachers),
                        run_config.steps_per_epoch(config.dataset))
  optimizer, learning_rate = optimizers.optimizer(stage_config.optimizer,
                                                  stage_config.num_steps)
  optimizer = recipe.optimizer_for(optimizer)
  seeds = [config.seed + i for i in range(stage_config.num_seeds or config.num_seeds)]
  states = sweep.stack_states([
      _initial_state(context, stage_config, module, optimizer, recipe, seed, i)
      for i, seed in enumerate(seeds)])

  cache = None
  if (teachers and method.cacheable and stage_config.cache_teacher
      and config.dataset.augmentation == "none" and not stage_config.mixup):
    cache = _teacher_logits(context, name, teacher_modules, teacher_vars, "train")
    if recipe.sparse_cache is not None:
      cache = _sparse_cache(context, name, cache, *recipe.sparse_cache)
  test_cache = (_teacher_logits(context, name, teacher_modules, teacher_vars, "test")
                if teachers else None)

  sweep_step = sweep.make_sweep_train_step(
      module, recipe.objective, optimizer, teacher=None if cache is not None else teacher_modules,
      output_tx=recipe.output_tx, aux_heads=recipe.aux_heads,
      log_schedules={"learning_rate": learning_rate, **recipe.log_schedules},
      report_teacher_finite=True)
  if stage_config.mixup:
    sweep_step = mixup.with_mixup(sweep_step, _mixup_key(config.seed, name),
                                  concentration=stage_config.mixup)
  checked = finite_guard.checked_metrics(recipe.objective)
  train_step = finite_guard.guard(sweep_step, checked, skip=config.nonfinite == "skip")
  eval_step = sweep.over_students(step_lib.make_eval_step(module))
  return Stage(
      name=name, config=stage_config, directory=workdir_lib.stage_dir(context.workdir, name),
      seeds=seeds, initial_states=states, teacher_vars=teacher_vars,
      teacher_accuracy=teacher_accuracy, train_cache=cache, test_cache=test_cache,
      train_program=context.compile(train_step, donate_state=True),
      eval_program=context.compile(eval_step, donate_state=False),
      checked=finite_guard.checked_names(checked),
      provenance={**context.provenance(stage_config.model), "stage": name,
                  "method": stage_config.method})


def _mixup_key(seed: int, stage_name: str) -> jax.Array:
  """The mixup key of a stage: the run's seed, the mixup stream, the stage's name."""
  key = jax.random.fold_in(jax.random.key(seed), Stream.MIXUP)
  return jax.random.fold_in(key, zlib.crc32(stage_name.encode()))


def _student_model(stage_config: ml_collections.ConfigDict, num_classes: int) -> Any:
  """The stage's student module, with the equal-mean head initializer when asked."""
  kwargs = ({"head_kernel_init": initializers.zero_mean()} if stage_config.zero_mean_head
            else {})
  return models.get(stage_config.model, num_classes, **kwargs)


def _teacher_feature_shapes(context: context_lib.RunContext,
                            teachers: list[context_lib.Teacher]) -> dict[str, tuple[int, ...]]:
  """The shapes of the first teacher's features, which size a method's heads (FitNets').

  Shapes only (``jax.eval_shape``): nothing is computed.
  """
  if not teachers:
    return {}
  _, captured = jax.eval_shape(
      lambda variables: teachers[0].module.apply(variables, context.sample, train=False,
                                                 mutable=["intermediates"]),
      teachers[0].variables)
  return {k: v[0].shape for k, v in captured.get("intermediates", {}).items()}


def _initial_state(context: context_lib.RunContext, stage_config: ml_collections.ConfigDict,
                   module: Any, optimizer: optax.GradientTransformation,
                   recipe: methods.Recipe, seed: int, index: int) -> state_lib.TrainState:
  """Seed ``seed``'s initial train state: fresh, or ``init_from``'s export of that seed."""
  key = jax.random.key(seed)
  if stage_config.init_from:
    variables = checkpoints.load_network(
        workdir_lib.export_dir(context.workdir, stage_config.init_from, index),
        context_lib.abstract_variables(module, context.sample),
        context.provenance(stage_config.model))
  else:
    variables = module.init(jax.random.fold_in(key, Stream.INITIALIZATION), context.sample,
                            train=False)
  return state_lib.create_train_state(
      module, variables, optimizer, jax.random.fold_in(key, Stream.STUDENT_RNG),
      output_tx=recipe.output_tx, aux_heads=recipe.aux_heads, sample_inputs=context.sample)


def _teacher_logits(context: context_lib.RunContext, name: str, teacher_modules: Any,
                    teacher_vars: Any, split: str) -> np.ndarray:
  """The teachers' logits of every example of ``split``; refused if a training one is not finite."""
  start = time.perf_counter()
  num_examples = context.info.num_train if split == "train" else context.info.num_test
  # Batches sharded over the devices like training batches: with unsharded ones, every
  # device would run the teachers on the whole batch (6-7x the time on 8 CPU devices).
  cache = teacher_cache.compute_teacher_logits(
      teacher_modules, teacher_vars, map(context.place_batch, context.eval_batches(split)),
      num_examples)
  bad = ~np.isfinite(cache).reshape(len(cache), -1).all(axis=1)
  if split == "train" and bad.any():
    teachers = ", ".join(context.config.stages[name].teachers)
    raise ValueError(f"stage {name}: the logits of its teachers ({teachers}) are not finite "
                     f"on {bad.sum()} of {len(cache)} training examples (the first: example "
                     f"{np.flatnonzero(bad)[0]}); they cannot teach.")
  context.report(f"stage {name}: cached the teacher logits of {num_examples} {split} "
                 f"examples in {time.perf_counter() - start:.1f}s")
  return cache


def _check_teacher_accuracy(context: context_lib.RunContext, name: str, teacher: str,
                            accuracy: float) -> None:
  """Refuses a teacher below ``config.min_teacher_accuracy_over_chance`` times chance."""
  multiple = context.config.min_teacher_accuracy_over_chance
  chance = 1.0 / context.info.num_classes
  if accuracy < multiple * chance:
    raise ValueError(
        f"stage {name}: teacher {teacher!r} has test accuracy {accuracy:.4f} on "
        f"{context.info.name}, below min_teacher_accuracy_over_chance={multiple:g} times "
        f"chance ({chance:.4f}): it would teach noise. Train it longer, or lower the threshold "
        f"(--config.min_teacher_accuracy_over_chance=1 allows any better than chance, 0 "
        f"turns the check off).")


def _sparse_cache(context: context_lib.RunContext, name: str, cache: np.ndarray, k: int,
                  temperature: float) -> teacher_cache.SparseCache:
  """The training cache kept as each example's top-k logits and tail logit at ``temperature``.

  ``cache`` is ``[N, 1, K]``: the logits of the one teacher a sparse method reads.
  """
  sparse = teacher_cache.SparseCache(teacher_cache.sparsify(cache[:, 0], k, temperature),
                                     num_classes=cache.shape[-1], temperature=temperature)
  size = sum(field.nbytes for field in sparse.targets)
  context.report(f"stage {name}: kept the teachers' top {k} of {cache.shape[-1]} logits per "
                 f"example, {size / 2**20:.1f} MiB of {cache.nbytes / 2**20:.1f} MiB")
  return sparse


def _teacher_accuracy(context: context_lib.RunContext, teacher: context_lib.Teacher) -> float:
  """The teacher's test accuracy: a sanity check before it teaches anyone."""
  network_state = state_lib.create_train_state(teacher.module, teacher.variables,
                                               optax.identity(), jax.random.key(0))
  eval_fn = context.compile(sweep.over_students(step_lib.make_eval_step(teacher.module)),
                            donate_state=False)
  states = context.place(sweep.stack_states([network_state]))
  return float(context.evaluate(eval_fn, states)["accuracy"][0])
