"""Checks a run config before anything is trained and resolves its lengths into steps.

``validate`` reads every field's type and range, resolves each length or interval given in
epochs into steps (``steps_per_epoch``), then checks each stage's name (one path component),
method, teachers (earlier stages or ``teacher_dirs``), ``init_from``, optimizer and objective
(built once, so their errors surface here), and mixup against methods that read labels.
"""

import math
import os

import ml_collections

from kdjax import data, methods, mixup, models, optimizers

NONFINITE_MODES = ("stop", "skip")


def validate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Checks a run config and returns it with every length and interval in steps.

  Every field's type and range, each stage's method, teachers (earlier stages or
  ``teacher_dirs``), ``init_from``, optimizer and objective (built once, so their errors
  surface here), and mixup against methods that read labels. Lengths and intervals are
  given in steps or in epochs, one of each pair (the other 0): a stage's ``num_steps`` or
  ``num_epochs``, its optimizer's ``warmup_steps`` or ``warmup_epochs`` (or neither),
  ``eval_every_steps`` or ``eval_every_epochs``, ``checkpoint_every_steps`` or
  ``checkpoint_every_epochs``. An epoch is ``steps_per_epoch`` steps; ``E`` epochs are
  ``round(E * steps_per_epoch)`` steps. ``train_and_evaluate`` calls it first and runs the
  config it returns; call it yourself to check a config without training.

  Returns:
    A copy of ``config`` in steps: each ``*_epochs`` field resolved into its ``*_steps``
    twin and removed, so that the loop, the stage records and the results see steps only
    (a stage given in epochs records the same ``num_steps`` as one given in steps); each
    stage's ``loss`` holds exactly its method's fields (``kdjax.methods.Method.fields``),
    a missing one at its default. ``config`` itself is not changed.

  Raises:
    ValueError: naming the offending field (``stages.NAME.FIELD``) and value; a loss field
      the stage's method does not read names the method's fields.

  Example:
    >>> from kdjax import config as base
    >>> config = base.get_config()
    >>> config.dataset.batch_size = 32  # an epoch of 1437 digits is 44 steps
    >>> config.stages.kd.num_steps, config.stages.kd.num_epochs = 0, 10
    >>> resolved = validate(config)
    >>> resolved.stages.kd.num_steps, "num_epochs" in resolved.stages.kd
    (440, False)
    >>> config.stages.kd.num_epochs = 0
    >>> validate(config)
    Traceback (most recent call last):
    ...
    ValueError: stages.kd.num_steps=0 and stages.kd.num_epochs=0: give the stage's length in ...
  """
  _check_dataset(config.dataset)
  resolved = _in_steps(config)
  _check_run_fields(resolved)
  earlier: list[str] = []
  for name, stage in resolved.stages.items():
    _check_stage_name(name)
    _check_stage(resolved, f"stages.{name}", stage, earlier)
    earlier.append(name)
  return resolved


def steps_per_epoch(dataset: ml_collections.ConfigDict) -> int:
  """The steps of one epoch: full batches of ``dataset.batch_size`` in its train split.

  ``num_train // batch_size``: the input pipeline drops each epoch's last partial batch,
  so an epoch never spills into the next. Lengths given in epochs are resolved with it,
  and DKD's warm-up counts its epochs with it.

  Example:
    >>> from kdjax import config as base
    >>> dataset = base.get_config().dataset
    >>> dataset.name, dataset.batch_size = "cifar10", 128
    >>> steps_per_epoch(dataset)
    390
  """
  return data.num_train(dataset.name) // dataset.batch_size


def _check_dataset(ds: ml_collections.ConfigDict) -> None:
  """Refuses an unknown dataset or augmentation, and batch sizes or worker counts out of range."""
  try:
    data.image_shape(ds.name)
  except ValueError as error:
    raise ValueError(f"dataset.name: {error}") from error
  if ds.augmentation not in data.AUGMENTATIONS:
    raise ValueError(f"dataset.augmentation={ds.augmentation!r} is unknown; valid: "
                     f"{', '.join(data.AUGMENTATIONS)}.")
  for field in ("batch_size", "eval_batch_size"):
    if not (isinstance(ds[field], int) and ds[field] >= 1):
      raise ValueError(f"dataset.{field}={ds[field]!r} must be a positive integer.")
  if ds.batch_size > data.num_train(ds.name):
    raise ValueError(f"dataset.batch_size={ds.batch_size} exceeds the "
                     f"{data.num_train(ds.name)} training examples of {ds.name!r}.")
  if not (isinstance(ds.worker_count, int) and ds.worker_count >= -1):
    raise ValueError(f"dataset.worker_count={ds.worker_count!r} must be an integer >= 0, or "
                     f"-1 (auto).")


def _in_steps(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A copy of ``config`` with each length or interval in steps, its epochs field removed."""
  per_epoch = steps_per_epoch(config.dataset)
  resolved = ml_collections.ConfigDict(config.to_dict())
  # Stages run in the order they were added; the copy keeps it.
  resolved.stages = ml_collections.ConfigDict(config.stages.to_dict(), sort_keys=False)
  _resolve_length(resolved, "", "eval_every", "the evaluation interval", per_epoch)
  _resolve_length(resolved, "", "checkpoint_every", "the checkpoint interval", per_epoch)
  for name, stage in resolved.stages.items():
    _resolve_length(stage, f"stages.{name}.", "num", "the stage's length", per_epoch)
    _resolve_length(stage.optimizer, f"stages.{name}.optimizer.", "warmup", "the warm-up",
                    per_epoch, optional=True)
    _resolve_loss(stage, f"stages.{name}")
  resolved.lock()
  return resolved


def _resolve_loss(stage: ml_collections.ConfigDict, where: str) -> None:
  """Makes ``stage.loss`` the fields of its method: missing ones at their defaults.

  A field the method does not read is refused (naming the method's fields): it would change
  nothing the stage trains, so another method or field was meant. A shared field left at its
  default (``kdjax.methods.SHARED_FIELDS``), as a stage whose method was changed after it
  was built keeps them (``--config.stages.x.method=...``), says nothing and is dropped.
  """
  if stage.method not in methods.METHODS:
    return  # refused, with the valid names, by _check_stage
  method = methods.get(stage.method)
  unread = [f"{field}={stage.loss[field]!r}" for field in method.unknown(stage.loss)
            if not _is_shared_default(field, stage.loss[field])]
  if unread:
    raise ValueError(f"{where}.loss sets {', '.join(unread)}, which method {stage.method!r} "
                     f"does not read (its fields: {', '.join(method.loss_fields)}); remove "
                     f"them, or choose the method that reads them.")
  loss = method.defaults()
  loss.update({field: stage.loss[field] for field in method.loss_fields if field in stage.loss})
  stage.loss = ml_collections.ConfigDict(loss)


def _is_shared_default(field: str, value) -> bool:
  """Whether ``field`` is a shared loss field at its default."""
  shared = methods.SHARED_FIELDS.get(field)
  return shared is not None and value == shared.default


def _resolve_length(section: ml_collections.ConfigDict, where: str, prefix: str, what: str,
                    per_epoch: int, optional: bool = False) -> None:
  """Sets ``section[prefix_steps]`` from itself or ``section[prefix_epochs]``, which it removes.

  Exactly one of the two is positive, the other 0 (with ``optional``, both may be 0).
  """
  steps_field, epochs_field = f"{prefix}_steps", f"{prefix}_epochs"
  steps, epochs = section[steps_field], section[epochs_field]
  if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
    raise ValueError(f"{where}{steps_field}={steps!r} must be an integer >= 0 (0: "
                     f"{what} is given in {epochs_field}).")
  if (isinstance(epochs, bool) or not isinstance(epochs, int | float)
      or not (math.isfinite(epochs) and epochs >= 0)):
    raise ValueError(f"{where}{epochs_field}={epochs!r} must be a finite number >= 0 (0: "
                     f"{what} is given in {steps_field}).")
  if steps and epochs:
    raise ValueError(f"{where}{steps_field}={steps} and {where}{epochs_field}={epochs:g} both "
                     f"give {what}: set one of them to 0.")
  if not (steps or epochs or optional):
    raise ValueError(f"{where}{steps_field}=0 and {where}{epochs_field}=0: give {what} in "
                     f"one of them.")
  if epochs:
    steps = round(epochs * per_epoch)
    if steps < 1:
      raise ValueError(f"{where}{epochs_field}={epochs:g} is less than one step (an epoch is "
                       f"{per_epoch} steps).")
  section[steps_field] = steps
  del section[epochs_field]


def _check_run_fields(config: ml_collections.ConfigDict) -> None:
  """Refuses bad run-wide fields: counts, the log interval, seed, nonfinite mode, teacher_dirs."""
  for field in ("num_seeds", "log_every_steps"):
    if not (isinstance(config[field], int) and config[field] >= 1):
      raise ValueError(f"{field}={config[field]!r} must be a positive integer.")
  if not (isinstance(config.seed, int) and 0 <= config.seed < 2**32):
    raise ValueError(f"seed={config.seed!r} must be an integer in [0, 2**32).")
  if config.nonfinite not in NONFINITE_MODES:
    raise ValueError(f"nonfinite={config.nonfinite!r} is unknown; valid: "
                     f"{', '.join(NONFINITE_MODES)}.")
  if not config.stages:
    raise ValueError("config.stages is empty: nothing to train.")
  threshold = config.min_teacher_accuracy_over_chance
  if not (isinstance(threshold, (int, float)) and math.isfinite(threshold) and threshold >= 0):
    raise ValueError(f"min_teacher_accuracy_over_chance={threshold!r} must be a finite "
                     f"number >= 0 (0 turns the teacher check off).")
  for name, td in config.teacher_dirs.items():
    _check_teacher_dir(name, td)


def _check_teacher_dir(name: str, td: object) -> None:
  """Refuses a ``teacher_dirs`` entry that is not ``{"directory": ..., "model": ...}``."""
  example = (f"config.teacher_dirs.{name} = ml_collections.ConfigDict("
             f"{{'directory': {str(td) if isinstance(td, str) else '/path/to/export'!r}, "
             f"'model': 'resnet56'}})")
  if not isinstance(td, ml_collections.ConfigDict):
    raise ValueError(f"teacher_dirs.{name}={td!r} must name the export's directory and the "
                     f"model it holds, as {example}; the model is the kdjax.models name the "
                     f"network was trained as.")
  if not td.get("directory") or td.get("model") not in models.names():
    raise ValueError(f"teacher_dirs.{name} needs a 'directory' and a 'model' from "
                     f"kdjax.models ({', '.join(models.names())}); got {td.to_dict()}; "
                     f"e.g. {example}.")


def _check_stage_name(name: str) -> None:
  """Refuses a stage name that is not one path component: it names ``WORKDIR/stages/NAME``."""
  separators = ("/", os.sep, os.altsep, "\x00")
  if not name or name in (os.curdir, os.pardir) or any(s and s in name for s in separators):
    raise ValueError(f"stage name {name!r} must be one path component (the stage's directory "
                     f"is WORKDIR/stages/NAME): no '/', not empty, '.' or '..'.")


def _check_stage(config: ml_collections.ConfigDict, where: str,
                 stage: ml_collections.ConfigDict, earlier: list[str]) -> None:
  """Refuses a stage's bad model, method, counts, teachers, init_from or recipe."""
  if stage.model not in models.names():
    raise ValueError(f"{where}.model={stage.model!r} is unknown; valid: "
                     f"{', '.join(models.names())}.")
  try:
    method = methods.get(stage.method)
  except ValueError as error:
    raise ValueError(f"{where}.method: {error}") from error
  if not (isinstance(stage.num_seeds, int) and stage.num_seeds >= 0):
    raise ValueError(f"{where}.num_seeds={stage.num_seeds!r} must be >= 0 (0: the run's).")
  _check_sources(config, where, stage, method, earlier)
  _check_recipe(config, where, stage, method)


def _check_sources(config: ml_collections.ConfigDict, where: str,
                   stage: ml_collections.ConfigDict, method: methods.Method,
                   earlier: list[str]) -> None:
  """Refuses a teacher count the method does not take, unknown teachers, a bad init_from."""
  teachers = tuple(stage.teachers)
  wanted = {"none": "no teacher", "one": "exactly one teacher", "many": "one or more teachers"}
  count_ok = {"none": not teachers, "one": len(teachers) == 1, "many": len(teachers) >= 1}
  if not count_ok[method.teachers]:
    raise ValueError(f"{where}.teachers={teachers}: method {stage.method!r} takes "
                     f"{wanted[method.teachers]}.")
  for teacher in teachers:
    if teacher not in earlier and teacher not in config.teacher_dirs:
      raise ValueError(f"{where}.teachers names {teacher!r}, which is neither an earlier "
                       f"stage ({earlier or 'none'}) nor a key of config.teacher_dirs.")
  if stage.init_from:
    if stage.init_from not in earlier:
      raise ValueError(f"{where}.init_from={stage.init_from!r} must be an earlier stage; "
                       f"earlier: {earlier or 'none'}.")
    source = config.stages[stage.init_from]
    if source.model != stage.model:
      raise ValueError(f"{where}.init_from={stage.init_from!r} trained model "
                       f"{source.model!r}, not {stage.model!r}.")
    if (stage.num_seeds or config.num_seeds) > (source.num_seeds or config.num_seeds):
      raise ValueError(f"{where} trains more seeds than init_from={stage.init_from!r} did: "
                       f"each seed starts from the same seed of that stage.")


def _check_recipe(config: ml_collections.ConfigDict, where: str,
                  stage: ml_collections.ConfigDict, method: methods.Method) -> None:
  """Builds the stage's optimizer and objective once, so that their errors surface here."""
  try:
    optimizers.optimizer(stage.optimizer, stage.num_steps)
  except ValueError as error:
    raise ValueError(f"{where}: {error}") from error
  if stage.mixup != 0:
    try:
      mixup.check_concentration(stage.mixup)
    except ValueError as error:
      raise ValueError(f"{where}.mixup: {error} 0 turns mixup off.") from error
  try:
    # The teachers are not loaded yet: a head sized from their features gets a stand-in.
    recipe = method.build(stage.loss, stage.num_steps, None, steps_per_epoch(config.dataset))
    method.check(stage.loss, data.num_classes(config.dataset.name))
  except ValueError as error:
    raise ValueError(f"{where}.loss: {error}") from error
  if all(_is_zero(t.weight) for t in recipe.objective.terms):
    raise ValueError(f"{where}.loss: every term of method {stage.method!r} has weight 0 "
                     f"({', '.join(t.label for t in recipe.objective.terms)}), so the stage "
                     f"would train nothing; give one of them a positive weight.")
  if stage.mixup and recipe.label_users:
    raise ValueError(f"{where}.mixup={stage.mixup}: mixup blends images, so the labels no "
                     f"longer describe them, but method {stage.method!r} reads labels (in "
                     f"{', '.join(recipe.label_users)}); use a label-free method "
                     f"(function_matching, annealing).")


def _is_zero(weight) -> bool:
  """Whether a term weight is the constant 0 (a schedule is never taken as 0)."""
  return not callable(weight) and weight == 0
