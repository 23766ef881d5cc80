"""CIFAR-10: CTKD (curriculum temperature), resnet56 → resnet20, RepDistiller recipe.

CE 0.1 + KD 0.9 at a learnable global temperature T = 1 + 20·σ(θ): θ trains with the
student (same optimizer, as in the official code) but with its gradient reversed
(``kdjax.transforms.reverse_gradients`` in front of the optimizer), so it ascends the KD
loss while the student descends it; the reversal weight λ rises from 0 to 1 on a cosine over
the first 10 of 240 epochs, as in the paper and the official code (whose reversal layer
multiplies by its λ, run from 0 to -1: the same ascent). 240 epochs, SGD lr 0.05, batch 64
(``cifar10_dkd.py``).

  python -m launch.train --config=configs/cifar10_ctkd.py --workdir=workdir/cifar10_b64

Reference (CIFAR-100, resnet56 → resnet20): KD 70.66, CTKD 71.19.
"""

from configs import base
from configs import cifar10_dkd as dkd


def get_config():
  config = dkd.repdistiller_config()
  config.stages.ctkd_resnet20 = base.stage(
      "resnet20", "ctkd", ("teacher_resnet56",), num_epochs=dkd.EPOCHS,
      optimizer=dkd.repdistiller_sgd(),
      loss=dict(mode="global", t_start=1.0, t_range=20.0,
                lambda_max=1.0, ramp_fraction=10 / 240))
  return config
