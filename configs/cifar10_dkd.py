"""CIFAR-10: decoupled KD (DKD), resnet56 → resnet20, with mdistiller's CIFAR-100 recipe.

mdistiller publishes CIFAR-100 recipes only (``configs/cifar100/dkd/res56_res20.yaml``);
this config applies that recipe unchanged to CIFAR-10, which neither paper reports:
CE + min(epoch/20, 1)·(α·TCKD + β·NCKD), epochs counted from 1, α = 1, β = 2, T = 4;
240 epochs, SGD lr 0.05 momentum 0.9 wd 5e-4, batch 64, LR ×0.1 after epochs 150, 180 and
210, crop + flip, evaluated every epoch (the RepDistiller / mdistiller recipe, shared by the
FitNets and attention configs). ``configs/cifar100_mdistiller.py`` is the paper's setting.

  python -m launch.train --config=configs/cifar10_dkd.py --workdir=workdir/cifar10_b64
"""

from configs import base
from configs import cifar10_teacher as c10

EPOCHS = 240


def repdistiller_sgd():
  return base.optimizer(learning_rate=0.05, weight_decay=5e-4,
                        decay_at=(150 / 240, 180 / 240, 210 / 240))


def repdistiller_config():
  """Batch 64, a resnet56 teacher trained for 240 epochs; students are added by the caller."""
  config = c10.cifar10_config()
  config.dataset.batch_size = 64
  config.num_seeds = 3
  config.stages.teacher_resnet56 = base.stage("resnet56", "scratch", num_epochs=EPOCHS,
                                              num_seeds=1, optimizer=repdistiller_sgd())
  return config


def get_config():
  config = repdistiller_config()
  config.stages.dkd_resnet20 = base.stage(
      "resnet20", "dkd", ("teacher_resnet56",), num_epochs=EPOCHS, optimizer=repdistiller_sgd(),
      loss=dict(alpha=1.0, beta=2.0, temperature=4.0,
                warmup_epochs=20))
  return config
