"""CIFAR-10: KD + Dark Knowledge Pruning, resnet110 → resnet8, one variant at a given γ.

DKP's exact formula is not public; kdjax ships three readings (``kdjax.losses.dkp``):
uniform (default), mean, tail. Pass the variant after the colon, and γ as an override:

  python -m launch.train --config=configs/cifar10_dkp.py --workdir=workdir/cifar10
  python -m launch.train --config=configs/cifar10_dkp.py:tail --workdir=workdir/cifar10 \\
      --config.stages.dkp_tail_resnet8.loss.gamma=0.8

The thesis reports +3 % over KD with ResNets on CIFAR-10.
"""

from configs import base
from configs import cifar10_teacher as c10


def get_config(variant: str = "uniform"):
  config = c10.cifar10_config()
  config.num_seeds = 3
  config.stages.teacher_resnet110 = c10.teacher_stage("resnet110")
  config.stages[f"dkp_{variant}_resnet8"] = base.stage(
      "resnet8", "dkp", ("teacher_resnet110",), num_epochs=200, optimizer=c10.sgd(),
      loss=dict(gamma=0.5, variant=variant, top_k=3))
  return config
