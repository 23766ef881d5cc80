"""CIFAR-10: train a teacher (resnet110 by default; also resnet56, 26, 20, 14, or any model).

The CIFAR-10 configs share this file's teacher stage and optimizer recipe. Run them all in
ONE workdir and the teacher trains once: a complete stage with an identical config is
reused by every later run in that workdir.

  python -m launch.train --config=configs/cifar10_teacher.py --workdir=workdir/cifar10
  python -m launch.train --config=configs/cifar10_teacher.py:resnet56 --workdir=workdir/cifar10

Settings of the TAKD / DGKD / Annealing-KD lineage: SGD, lr 0.1, momentum 0.9, weight decay
1e-4, batch 128, LR ×0.1 at 50 % and ×0.01 at 75 %, pad-4 crop + flip, 200 epochs.
"""

from configs import base


def sgd(**overrides):
  return base.optimizer(name="sgd", learning_rate=0.1, momentum=0.9, weight_decay=1e-4,
                        schedule="step", decay_at=(0.5, 0.75), decay_factor=0.1, **overrides)


def cifar10_config():
  """The CIFAR-10 run settings shared by every CIFAR-10 config (no stages yet)."""
  config = base.get_config()
  config.dataset.name = "cifar10"
  config.dataset.augmentation = "crop_flip"
  config.dataset.batch_size = 128
  config.dataset.eval_batch_size = 1000
  # Evaluated every epoch: the reference codes keep each run's best epoch, and so does the
  # summary's "best" column.
  config.eval_every_steps, config.eval_every_epochs = 0, 1
  config.log_every_steps = 100
  config.checkpoint_every_steps, config.checkpoint_every_epochs = 0, 5
  config.stages = base.stages()
  return config


def teacher_stage(model: str = "resnet110"):
  return base.stage(model, "scratch", num_epochs=200, num_seeds=1, optimizer=sgd())


def get_config(model: str = "resnet110"):
  config = cifar10_config()
  config.stages[f"teacher_{model}"] = teacher_stage(model)
  return config
