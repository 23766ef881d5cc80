"""CIFAR-10: FitNets hints, resnet56 → resnet20: CE + 100 · MSE(regressor(stage2), stage2).

The regressor (conv + BN + ReLU) trains with the student and is not exported with it.

  python -m launch.train --config=configs/cifar10_fitnets.py --workdir=workdir/cifar10_b64
"""

from configs import base
from configs import cifar10_dkd as recipe


def get_config():
  config = recipe.repdistiller_config()
  config.stages.fitnets_resnet20 = base.stage(
      "resnet20", "fitnets", ("teacher_resnet56",), num_epochs=recipe.EPOCHS,
      optimizer=recipe.repdistiller_sgd(), loss=dict(weight=100.0,
                                                     feature="stage2"))
  return config
