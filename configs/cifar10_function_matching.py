"""CIFAR-10: function matching with a consistent teacher, resnet56 → resnet8.

Beyer et al.'s recipe: no labels, KD (T = 1) with teacher and student on the *same*
randomly augmented view every step (crop, flip and mixup; so teacher outputs are never
cached), and a long schedule with a cosine learning rate. Mixup happens inside the train
step, before the teacher's forward pass: one uniform ratio per batch (concentration 1.0),
each image blended with its neighbour in the batch.

  python -m launch.train --config=configs/cifar10_function_matching.py --workdir=workdir/cifar10
"""

from configs import base
from configs import cifar10_teacher as c10


def get_config():
  config = c10.cifar10_config()
  config.num_seeds = 3
  config.stages.teacher_resnet56 = c10.teacher_stage("resnet56")
  config.stages.function_matching_resnet8 = base.stage(
      "resnet8", "function_matching", ("teacher_resnet56",), num_epochs=1000,
      optimizer=base.optimizer(learning_rate=0.1, weight_decay=5e-4, schedule="cosine",
                               warmup_epochs=5),
      loss=dict(temperature=1.0, kd_weight=1.0), mixup=1.0)
  return config
