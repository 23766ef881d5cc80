"""CIFAR-100: resnet110 → resnet8 by scratch, KD, TAKD, DKP and Annealing-KD, one protocol.

The setting of the TAKD, DKP and Annealing-KD papers' CIFAR-100 results (TAKD's official
run is ``train.py --epochs 160 --teacher resnet110 --student resnet8``, CIFAR-100 by
default). Every stage follows TAKD's official protocol (see ``configs/cifar10_takd.py``):
no augmentation, 160 epochs, batch 128, SGD momentum 0.9 weight decay 1e-4, evaluated every
epoch, LR ``intended`` (0.1, ×0.1 at 50 %, ×0.01 at 75 %; default) or ``effective`` (0.01,
then 0.001 from 75 %: what the code runs). Where a paper used another setting:

- KD: T = 4, CE 0.1 + KD 0.9 (kdjax's default Hinton KD), KL summed over classes;
- TAKD: resnet20 assistant, T = 10, λ = 0.5 with KL / K, a point of TAKD's search space;
- DKP: the ``uniform`` reading at γ = 0.5 on that KD (the thesis trained 200 epochs);
- Annealing-KD: T_max = 10, stage I then stage II of 160 epochs each (the paper: 200 + 200
  with crop + flip).

  python -m launch.train --config=configs/cifar100_resnet8.py --workdir=workdir/cifar100_noaug
  python -m launch.train --config=configs/cifar100_resnet8.py:effective \\
      --workdir=workdir/cifar100_noaug_effective_lr

References (CIFAR-100, resnet8): DKP's headline, 61.82 → 62.4; Annealing-KD 63.1.
"""

import ml_collections

from configs import base
from configs import cifar10_takd as takd
from configs import cifar10_teacher as c10


def cifar100_config() -> ml_collections.ConfigDict:
  """The CIFAR-10 run settings on CIFAR-100 (same image size and training-set size)."""
  config = c10.cifar10_config()
  config.dataset.name = "cifar100"
  return config


def get_config(lr_schedule: str = "intended"):
  config = takd.official_protocol(cifar100_config())
  config.num_seeds = 3
  sgd = takd.sgd(lr_schedule)
  config.stages.teacher_resnet110 = base.stage("resnet110", "scratch", num_epochs=takd.EPOCHS,
                                               num_seeds=1, optimizer=sgd)
  config.stages.ta_resnet20 = base.stage("resnet20", "kd", ("teacher_resnet110",),
                                         num_epochs=takd.EPOCHS, num_seeds=1, optimizer=sgd,
                                         loss=takd.loss())
  config.stages.scratch_resnet8 = base.stage("resnet8", "scratch", num_epochs=takd.EPOCHS,
                                             optimizer=sgd)
  config.stages.kd_resnet8 = base.stage("resnet8", "kd", ("teacher_resnet110",),
                                        num_epochs=takd.EPOCHS, optimizer=sgd)
  config.stages.takd_resnet8 = base.stage("resnet8", "kd", ("ta_resnet20",), num_epochs=takd.EPOCHS,
                                          optimizer=sgd, loss=takd.loss())
  config.stages.dkp_uniform_resnet8 = base.stage(
      "resnet8", "dkp", ("teacher_resnet110",), num_epochs=takd.EPOCHS, optimizer=sgd,
      loss=dict(gamma=0.5, variant="uniform"))
  config.stages.annealing_1_resnet8 = base.stage(
      "resnet8", "annealing", ("teacher_resnet110",), num_epochs=takd.EPOCHS, optimizer=sgd,
      loss=dict(max_temperature=10))
  config.stages.annealing_2_resnet8 = base.stage(
      "resnet8", "scratch", num_epochs=takd.EPOCHS, init_from="annealing_1_resnet8", optimizer=sgd)
  return config
