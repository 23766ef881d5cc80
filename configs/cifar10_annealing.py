"""CIFAR-10: Annealing-KD, resnet110 → resnet8 in two stages.

Stage I regresses the student's logits onto Φ·teacher logits, Φ = 1/10, 2/10, …, 1 over
equal shares of the stage (no labels); stage II fine-tunes the best stage-I network on hard
labels with a fresh optimizer and LR schedule. Official settings: T_max = 10, 200 + 200
epochs, SGD lr 0.1 momentum 0.9 wd 1e-4, batch 128, LR ×0.1 at 50 % and ×0.01 at 75 % of
each stage, crop + flip. As in the official code, stage I is a mean squared error and
stage II a cross-entropy: neither has a KL term.

  python -m launch.train --config=configs/cifar10_annealing.py --workdir=workdir/cifar10

Reference: Annealing-KD 89.44 (scratch 88.44, KD 88.45).
"""

from configs import base
from configs import cifar10_teacher as c10


def get_config():
  config = c10.cifar10_config()
  config.num_seeds = 3
  config.stages.teacher_resnet110 = c10.teacher_stage("resnet110")
  config.stages.annealing_1_resnet8 = base.stage(
      "resnet8", "annealing", ("teacher_resnet110",), num_epochs=200,
      optimizer=c10.sgd(), loss=dict(max_temperature=10))
  config.stages.annealing_2_resnet8 = base.stage(
      "resnet8", "scratch", num_epochs=200, init_from="annealing_1_resnet8",
      optimizer=c10.sgd())
  return config
