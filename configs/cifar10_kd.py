"""CIFAR-10: resnet110 → resnet8 by Hinton KD (T = 4, CE 0.1 + KD 0.9), next to scratch.

  python -m launch.train --config=configs/cifar10_kd.py --workdir=workdir/cifar10

Reference (Annealing-KD / TAKD lineage, teacher 93.8 %): scratch 88.44, KD 88.45.
"""

from configs import base
from configs import cifar10_teacher as c10


def get_config():
  config = c10.cifar10_config()
  config.num_seeds = 3
  config.stages.teacher_resnet110 = c10.teacher_stage("resnet110")
  config.stages.scratch_resnet8 = base.stage("resnet8", "scratch", num_epochs=200,
                                             optimizer=c10.sgd())
  config.stages.kd_resnet8 = base.stage("resnet8", "kd", ("teacher_resnet110",),
                                        num_epochs=200, optimizer=c10.sgd())
  return config
