"""CIFAR-10: DIST, resnet56 → resnet20, with the RepDistiller / mdistiller recipe.

CE + T²·(β·inter-class + γ·intra-class relation), T = 4, β = γ = 2: the paper's CIFAR-100
setting, and the official one (hunto/image_classification_sota
``configs/strategies/distill/dist_cifar.yaml``: ``ori_loss_weight: 1``,
``kd_loss_weight: 2`` on ``dist_t4``, i.e. ``DIST(beta=1, gamma=1, tau=4)``); the
intra-class relation correlates each class's probabilities across the batch of 64, so the
loss is a batch loss. 240 epochs, SGD
lr 0.05, batch 64 (``cifar10_dkd.py``).

  python -m launch.train --config=configs/cifar10_dist.py --workdir=workdir/cifar10_b64

Reference: DKD with the same recipe (``cifar10_dkd.py``).
"""

from configs import base
from configs import cifar10_dkd as dkd


def get_config():
  config = dkd.repdistiller_config()
  config.stages.dist_resnet20 = base.stage(
      "resnet20", "dist", ("teacher_resnet56",), num_epochs=dkd.EPOCHS,
      optimizer=dkd.repdistiller_sgd(),
      loss=dict(ce_weight=1.0, kd_weight=1.0, temperature=4.0, beta=2.0,
                gamma=2.0))
  return config
