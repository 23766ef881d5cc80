"""CIFAR-10: TAKD, resnet110 → resnet20 (assistant) → resnet8, each step Hinton KD.

  python -m launch.train --config=configs/cifar10_takd.py --workdir=workdir/cifar10

The TAKD code base trains with PyTorch's KLDivLoss() default ('mean', i.e. KL / K), T = 10
and λ = 0.5; here ``class_reduction="mean"`` reproduces that. (Its LR schedule never decays
because of a bug; kdjax decays it as configured.) Reference: TAKD 88.47 on resnet110 → 8.
"""

from configs import base
from configs import cifar10_teacher as c10


def _takd_loss():
  return base.loss(temperature=10.0, ce_weight=0.5, kd_weight=0.5, class_reduction="mean")


def get_config():
  config = c10.cifar10_config()
  config.num_seeds = 3
  config.stages.teacher_resnet110 = c10.teacher_stage("resnet110")
  config.stages.ta_resnet20 = base.stage("resnet20", "kd", ("teacher_resnet110",),
                                         num_steps=c10.epochs(200), num_seeds=1,
                                         optimizer=c10.sgd(), loss=_takd_loss())
  config.stages.takd_resnet8 = base.stage("resnet8", "kd", ("ta_resnet20",),
                                          num_steps=c10.epochs(200), optimizer=c10.sgd(),
                                          loss=_takd_loss())
  return config
