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
  >>> stage("mlp_tiny", "dkp", ("teacher",), loss=loss(gamma=0.3)).loss.gamma
  0.3
"""

import ml_collections


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


def loss(**overrides) -> ml_collections.ConfigDict:
  """Loss hyperparameters of a stage; each method reads the fields it needs.

  Example:
    >>> loss(temperature=8.0).temperature, loss().kd_weight
    (8.0, 0.9)
  """
  config = ml_collections.ConfigDict({
      "temperature": 4.0,  # softmax temperature T of KD-style terms
      "ce_weight": 0.1,  # weight of cross-entropy with labels in KD-style methods
      "kd_weight": 0.9,  # weight of the distillation term
      "class_reduction": "sum",  # sum (batchmean KL) | mean (PyTorch KLDivLoss() default)
      "label_smoothing": 0.0,  # of the cross-entropy term
      # z-score the student's and teachers' logits before the temperature (Sun et al., CVPR
      # 2024): kd | dkd | dgkd | ensemble | function_matching | divergence | dist | dkp with
      # dkp_form=loss
      "logit_standardization": False,
      "gamma": 0.5,  # dkp: strength of Dark Knowledge Pruning, in [0, 1]
      "dkp_variant": "uniform",  # dkp: uniform | mean | tail
      "dkp_top_k": 2,  # dkp tail: the teacher's leading non-target classes kept whole
      "dkp_form": "transform",  # dkp: transform (optax output transform) | loss (loss term)
      # annealing: T_max; Phi steps 1/T_max, ..., 1, each level an equal share of the stage
      # (within a step), ending at 1; the stage needs num_steps >= max_temperature
      "max_temperature": 10,
      # continuation: Phi's T_max; Phi climbs 1/T_max, ..., 1 over the first
      # continuation_anneal_fraction of the stage
      "continuation_max_temperature": 20,
      "continuation_anneal_fraction": 0.5,
      # continuation: psi ramps CE's weight 0 -> 1 (the hinge's 1 -> 0) over this fraction
      "continuation_ramp_fraction": 0.75,
      "continuation_margin": 1.0,  # continuation: hinge margin m (on the mean squared error)
      "divergence": "reverse_kl",  # divergence: reverse_kl | jensen_shannon | total_variation
      # divergence jensen_shannon: interpolation beta in [0, 1] (0: forward KL, 1: reverse KL)
      "jsd_beta": 0.5,
      "dist_beta": 2.0,  # dist: weight of the inter-class relation
      "dist_gamma": 2.0,  # dist: weight of the intra-class relation (couples the batch)
      # sparse_kd: the teacher classes kept per example, in [1, K]; the rest share one tail
      # bucket (a teacher cache keeps k of the K logits)
      "teacher_top_k": 10,
      "ctkd_mode": "global",  # ctkd: global (one learnable temperature) | instance (an MLP)
      "ctkd_t_start": 1.0,  # ctkd: the lowest temperature T_0
      "ctkd_t_range": 20.0,  # ctkd: T lies in (T_0, T_0 + t_range)
      # ctkd: the temperature's gradient-reversal weight rises 0 -> ctkd_lambda_max in [0, 1]
      # on a cosine over this fraction of the stage; 1 is the paper's and the code's
      "ctkd_lambda_max": 1.0,
      "ctkd_ramp_fraction": 10 / 240,
      "dkd_alpha": 1.0,  # dkd: TCKD weight
      "dkd_beta": 8.0,  # dkd: NCKD weight
      "dkd_warmup_epochs": 0,  # dkd: weight min(epoch / this, 1), epochs from 1 (0: none)
      "dgkd_mode": "code",  # dgkd: code (drop drop_num terms) | paper (Bernoulli) | none
      "dgkd_keep_prob": 0.75,  # dgkd paper mode: keep probability of each teaching network
      "dgkd_drop_num": 1,  # dgkd code mode: terms removed per batch
      # dgkd paper mode: keep the teacher (the first teaching network) in every batch and
      # drop assistants only; False drops any network, as the paper does
      "dgkd_keep_teacher": False,
      "hint_weight": 100.0,  # fitnets: weight of the hint loss
      "hint_feature": "stage2",  # fitnets: the guided student / hint teacher feature
      "at_weight": 1000.0,  # attention transfer: weight
      "at_features": ("stage1", "stage2", "stage3"),  # attention transfer: stages compared
  })
  config.update(overrides)
  return config


def stage(model: str, method: str = "scratch", teachers: tuple[str, ...] = (),
          num_steps: int = 0, num_epochs: float = 0.0,
          **overrides) -> ml_collections.ConfigDict:
  """One stage of a run: the network it trains, how, and from which teachers.

  Its length is ``num_steps`` or ``num_epochs``: give exactly one.

  Example:
    >>> kd = stage("mlp_tiny", "kd", ("teacher",), num_steps=600)
    >>> kd.method, kd.teachers, kd.num_steps, kd.optimizer.name
    ('kd', ('teacher',), 600, 'sgd')
  """
  config = ml_collections.ConfigDict({
      "model": model,  # a kdjax.models name
      # scratch | kd | dkp | annealing | continuation | logits_matching | dkd | divergence |
      # dist | ctkd | sparse_kd | dgkd | ensemble | fitnets | attention | function_matching
      "method": method,
      "teachers": tuple(teachers),  # earlier stages (or config.teacher_dirs keys), largest first
      "num_steps": num_steps,  # training steps of the stage...
      "num_epochs": float(num_epochs),  # ...or its length in epochs (exactly one is set)
      # stage whose network (earlier_export) initializes this one (Annealing-KD stage II)
      "init_from": "",
      # the export of an earlier stage this one reads, as a teacher or through init_from:
      # last (its network at the end of training, as RepDistiller loads teachers) | best (its
      # best evaluation, as TAKD's, DGKD's and Annealing-KD's code load theirs: a network
      # chosen on the test split). Teachers of config.teacher_dirs are read as given.
      "earlier_export": "last",
      "zero_mean_head": False,  # equal-mean classifier initialization (Chen et al.)
      "cache_teacher": True,  # precompute teacher logits when augmentation is off
      # mixup of the images in the train step, teacher and student on the same mixed view:
      # its Dirichlet concentration (1.0: uniform ratio; 0: off); label-free methods only
      "mixup": 0.0,
      # students trained at once (vmapped), all on the same batches; 0: config.num_seeds
      "num_seeds": 0,
      "optimizer": optimizer(),
      "loss": loss(),
  })
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
