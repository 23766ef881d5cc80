"""CIFAR-10: decoupled KD (DKD), resnet56 → resnet20, with the mdistiller recipe.

CE + min(epoch/20, 1)·(α·TCKD + β·NCKD), α = 1, β = 2 (resnet56 → resnet20), T = 4;
240 epochs, SGD lr 0.05 momentum 0.9 wd 5e-4, batch 64, LR ×0.1 at epochs 150, 180, 210
(the RepDistiller / mdistiller recipe, shared by the FitNets and attention configs).

  python -m launch.train --config=configs/cifar10_dkd.py --workdir=workdir/cifar10_b64
"""

from configs import base
from configs import cifar10_teacher as c10

STEPS = 240 * (50_000 // 64)


def repdistiller_sgd():
  return base.optimizer(learning_rate=0.05, weight_decay=5e-4,
                        decay_at=(150 / 240, 180 / 240, 210 / 240))


def repdistiller_config():
  """Batch 64, a resnet56 teacher trained for 240 epochs; students are added by the caller."""
  config = c10.cifar10_config()
  config.dataset.batch_size = 64
  config.num_seeds = 3
  config.stages.teacher_resnet56 = base.stage("resnet56", "scratch", num_steps=STEPS,
                                              num_seeds=1, optimizer=repdistiller_sgd())
  return config


def get_config():
  config = repdistiller_config()
  config.stages.dkd_resnet20 = base.stage(
      "resnet20", "dkd", ("teacher_resnet56",), num_steps=STEPS, optimizer=repdistiller_sgd(),
      loss=base.loss(dkd_alpha=1.0, dkd_beta=2.0, temperature=4.0,
                     dkd_warmup_fraction=20 / 240))
  return config
