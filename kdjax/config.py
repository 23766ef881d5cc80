"""The schema of a training run: every config field, with its default and meaning.

``get_config()`` returns the defaults (a teacher and a KD student on the bundled digits);
a run's config starts from it and overrides a few fields. A run is a sequence of *stages*
(``config.stages``, in order): each trains one network — a teacher, an assistant or a
student — with one method, possibly distilling from the networks of earlier stages (or of
``config.teacher_dirs``). Stages are keyed by name; a stage's output lives in
``WORKDIR/stages/NAME`` and a finished stage is reused, not retrained.

Lengths and intervals are given in steps or in epochs (passes over the dataset's train
split, ``num_train // dataset.batch_size`` steps each): a stage's ``num_steps`` or
``num_epochs``, the optimizer's ``warmup_steps`` or ``warmup_epochs``, ``eval_every_steps``
or ``eval_every_epochs``, ``checkpoint_every_steps`` or ``checkpoint_every_epochs``. One of
each pair is set, the other is 0; ``kdjax.trainer.validate`` resolves them to steps, so a
larger batch size trains the same epochs in fewer steps.

A config of your own, in any directory, for the installed ``kdjax-train`` binary (or
``python -m launch.train`` in a checkout)::

  from kdjax import config as base

  def get_config():
    config = base.get_config()
    config.stages = base.stages()
    config.stages.teacher = base.stage("resnet8", "scratch", num_steps=1000)
    config.stages.kd = base.stage("mlp_tiny", "kd", ("teacher",), num_steps=600)
    return config

  kdjax-train --config=my_config.py --workdir=runs/mine

Example:
  >>> config = get_config()
  >>> config.dataset.name, list(config.stages), config.stages.kd.teachers
  ('digits', ['teacher', 'kd'], ('teacher',))
  >>> stage("mlp_tiny", "dkp", ("teacher",), loss={"gamma": 0.3}).loss.gamma
  0.3

A stage's ``loss`` holds the fields of its method and no other, each at its default unless
overridden: ``kdjax.methods.describe("dkd")`` lists DKD's (``alpha``, ``beta``,
``warmup_epochs`` and the shared ones), and a field the method does not read is refused
with the list (``--config.stages.dkd.loss.alpha=2`` on the command line).
"""

from collections.abc import Mapping
from typing import Any

import ml_collections

from kdjax import methods


def optimizer(**overrides) -> ml_collections.ConfigDict:
  """Optimizer and learning-rate schedule of a stage.

  Example:
    >>> optimizer(name="adam", learning_rate=3e-3).schedule
    'step'
  """
  config = ml_collections.ConfigDict({
      "name": "sgd",  # sgd | adam | adamw
      "learning_rate": 0.1,  # peak learning rate
      "momentum": 0.9,  # sgd momentum (0 for plain SGD)
      "nesterov": False,  # sgd Nesterov momentum
      "weight_decay": 5e-4,  # L2 (sgd, adam: added to the gradient) or decoupled (adamw)
      "schedule": "step",  # constant | step | cosine
      "decay_at": (0.5, 0.75),  # step: fractions of the stage where the LR is multiplied...
      "decay_factor": 0.1,  # ...by this factor each time
      "warmup_steps": 0,  # linear warm-up from 0 before the schedule, in steps...
      "warmup_epochs": 0.0,  # ...or in epochs (at most one of the two is set)
  })
  config.update(overrides)
  return config


def stage(model: str, method: str = "scratch", teachers: tuple[str, ...] = (),
          num_steps: int = 0, num_epochs: float = 0.0, loss: Mapping[str, Any] | None = None,
          **overrides) -> ml_collections.ConfigDict:
  """One stage of a run: the network it trains, how, and from which teachers.

  Its length is ``num_steps`` or ``num_epochs``: give exactly one. Its ``loss`` holds the
  fields of ``method`` (``kdjax.methods.describe(method)``) at their defaults, with the
  values of ``loss`` in place of theirs.

  Raises:
    ValueError: for an unknown method, or a ``loss`` field that ``method`` does not read
      (naming its fields).

  Example:
    >>> kd = stage("mlp_tiny", "kd", ("teacher",), num_steps=600)
    >>> kd.method, kd.teachers, kd.num_steps, kd.optimizer.name
    ('kd', ('teacher',), 600, 'sgd')
    >>> dkd = stage("mlp_tiny", "dkd", ("teacher",), num_steps=600, loss={"alpha": 2.0})
    >>> dkd.loss.alpha, dkd.loss.beta, "ce_weight" in dkd.loss
    (2.0, 8.0, False)
    >>> stage("mlp_tiny", "dkd", ("teacher",), num_steps=600, loss={"dkd_alpha": 2.0})
    Traceback (most recent call last):
    ...
    ValueError: loss field(s) ['dkd_alpha'] are not read by method 'dkd'; its fields: ...
  """
  config = ml_collections.ConfigDict({
      "model": model,  # a kdjax.models name
      # scratch | kd | dkp | annealing | continuation | logits_matching | dkd | divergence |
      # dist | ctkd | sparse_kd | dgkd | ensemble | fitnets | attention | function_matching
      "method": method,
      "teachers": tuple(teachers),  # earlier stages (or config.teacher_dirs keys), largest first
      "num_steps": num_steps,  # training steps of the stage...
      "num_epochs": float(num_epochs),  # ...or its length in epochs (exactly one is set)
      "init_from": "",  # stage whose best network initializes this one (Annealing-KD stage II)
      "zero_mean_head": False,  # equal-mean classifier initialization (Chen et al.)
      "cache_teacher": True,  # precompute teacher logits when augmentation is off
      # mixup of the images in the train step, teacher and student on the same mixed view:
      # its Dirichlet concentration (1.0: uniform ratio; 0: off); label-free methods only
      "mixup": 0.0,
      # students trained at once (vmapped), all on the same batches; 0: config.num_seeds
      "num_seeds": 0,
      "optimizer": optimizer(),
      "loss": loss_config(method, **(loss or {})),
  })
  config.update(overrides)
  return config


def loss_config(method: str, **overrides) -> ml_collections.ConfigDict:
  """The ``loss`` of a ``method`` stage: its fields at their defaults, then ``overrides``.

  Raises:
    ValueError: for an unknown method, or an override that is not one of its fields.

  Example:
    >>> loss_config("sparse_kd", top_k=5).top_k
    5
  """
  entry = methods.get(method)
  unknown = entry.unknown(overrides)
  if unknown:
    raise ValueError(f"loss field(s) {unknown} are not read by method {method!r}; its "
                     f"fields: {', '.join(entry.loss_fields)}.")
  config = ml_collections.ConfigDict(entry.defaults())
  config.update(overrides)
  return config


def stages() -> ml_collections.ConfigDict:
  """An empty stage list; stages run in the order they are added (not sorted by name).

  Example:
    >>> runs = stages()
    >>> runs.b, runs.a = stage("mlp"), stage("mlp_tiny")
    >>> list(runs)
    ['b', 'a']
  """
  return ml_collections.ConfigDict(sort_keys=False)


def get_config() -> ml_collections.ConfigDict:
  """The defaults of every field: a resnet8 teacher and an MLP KD student on the digits.

  Example:
    >>> get_config().stages.kd.model
    'mlp'
  """
  config = ml_collections.ConfigDict()
  config.seed = 0  # seed of initialization, data order, augmentation and teacher dropping
  # Students per stage trained at once (vmapped), with seeds seed, seed+1, ...: each seed has
  # its own initialization and in-step randomness (dropout, DGKD's teacher dropping), but all
  # of a stage's seeds read the same batches and augmentation (one data iterator seeded by
  # config.seed; mixup ratios too). So the summary's mean ± std over seeds measures
  # initialization and training randomness, not data order.
  config.num_seeds = 1
  config.dataset = ml_collections.ConfigDict({
      "name": "digits",  # digits (bundled) | cifar10 | cifar100; other datasets are refused
      "data_dir": "",  # TFDS data_dir; "" uses KDJAX_DATA_DIR or ~/tensorflow_datasets
      "download": False,  # let TFDS download and prepare a missing dataset (needs network)
      "augmentation": "none",  # none | flip | crop_flip
      "batch_size": 128,  # global training batch size
      "eval_batch_size": 512,  # global evaluation batch size (the last one padded, masked)
      # image-decoding worker processes of the training pipeline: 0 decodes in the trainer's
      # process; -1 (auto): half the host's cores, at most 8, on GPU/TPU hosts (the pipeline
      # is the bottleneck there; needs absl flags parsed, as launch/train.py does), 0 on CPU
      # (the step is). Batches are the same either way; a stage resumes with the count its
      # checkpoint was saved with (auto keeps it; another explicit count is refused).
      "worker_count": -1,
  })
  config.stages = stages()
  config.stages.teacher = stage("resnet8", "scratch", num_steps=1000)
  config.stages.kd = stage("mlp", "kd", teachers=("teacher",), num_steps=1000)
  # Teachers trained elsewhere, by name (a stage's teachers may name them):
  # config.teacher_dirs.NAME = ml_collections.ConfigDict({"directory": EXPORT, "model": MODEL}),
  # EXPORT an export_network directory (e.g. OTHER_WORKDIR/stages/teacher/export/seed0/last),
  # MODEL the kdjax.models name it was trained as
  config.teacher_dirs = ml_collections.ConfigDict()
  # Refuse a teacher whose test accuracy is below this multiple of chance (1 / classes): it
  # would teach noise. 0 turns the check off; not part of a stage's record.
  config.min_teacher_accuracy_over_chance = 2.0
  config.eval_every_steps = 500  # evaluate the student on the test split this often...
  config.eval_every_epochs = 0.0  # ...or every this many epochs (exactly one is set)
  config.log_every_steps = 50  # write training metrics this often
  config.checkpoint_every_steps = 500  # save a resumable checkpoint this often...
  config.checkpoint_every_epochs = 0.0  # ...or every this many epochs (exactly one is set)
  # NaN/Inf in teacher outputs, losses or gradients: stop (name the step and the term; no
  # checkpoint records it) | skip (leave the student as it was and count the step)
  config.nonfinite = "stop"
  config.compilation_cache_dir = "~/.cache/kdjax/jax"  # persistent XLA cache; "" disables
  config.progress_bar = True  # a progress bar with throughput and ETA on the terminal
  return config
