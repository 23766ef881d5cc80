"""CIFAR-10: attention transfer, resnet56 → resnet20: CE + 1000 · Σ_stages AT loss.

  python -m launch.train --config=configs/cifar10_attention.py --workdir=workdir/cifar10_b64
"""

from configs import base
from configs import cifar10_dkd as recipe


def get_config():
  config = recipe.repdistiller_config()
  config.stages.attention_resnet20 = base.stage(
      "resnet20", "attention", ("teacher_resnet56",), num_epochs=recipe.EPOCHS,
      optimizer=recipe.repdistiller_sgd(),
      loss=dict(weight=1000.0, features=("stage1", "stage2", "stage3")))
  return config
