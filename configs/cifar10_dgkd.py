"""CIFAR-10: DGKD chain resnet26 → resnet20 → resnet14 → resnet8, no augmentation.

Each network learns from every larger one; the final student drops teaching networks at
random per batch. The official code's defaults (wonchulSon/DGKD ``train.py``): T = 5,
160 epochs, batch 128, SGD lr 0.1 (×0.1 at 50 %, ×0.01 at 75 %) momentum 0.9 weight decay
1e-4, ``--lamb`` 1, i.e. λ·T²·ΣKL with no cross-entropy (the loss is (1 − λ)·CE + λ·…),
PyTorch KLDivLoss()'s 'mean' reduction, no augmentation (``--crop`` False: teacher logits
are cached, one student forward and backward per step). ``mode`` "code" removes one of
the n+1 terms per batch (``--drop-num`` 1); set
``--config.stages.dgkd_resnet8.loss.mode=paper`` for the paper's Bernoulli(0.75) per
network, the teacher included.

  python -m launch.train --config=configs/cifar10_dgkd.py --workdir=workdir/cifar10_noaug

Reference: TAKD 88.01, DGKD 89.02 (stochastic dropping adds +0.64).
"""

from configs import base
from configs import cifar10_teacher as c10

EPOCHS = 160


def _dgkd_loss():
  return dict(temperature=5.0, ce_weight=0.0, kd_weight=1.0, class_reduction="mean")


def get_config():
  config = c10.cifar10_config()
  config.dataset.augmentation = "none"
  config.num_seeds = 3
  config.stages.teacher_resnet26 = base.stage("resnet26", "scratch", num_epochs=EPOCHS,
                                              num_seeds=1, optimizer=c10.sgd())
  chain = ["teacher_resnet26"]
  for model in ("resnet20", "resnet14"):
    name = f"ta_{model}"
    config.stages[name] = base.stage(model, "dgkd", tuple(chain), num_epochs=EPOCHS, num_seeds=1,
                                     optimizer=c10.sgd(), loss=_dgkd_loss())
    config.stages[name].loss.mode = "none"  # assistants learn from all larger networks
    chain.append(name)
  config.stages.dgkd_resnet8 = base.stage("resnet8", "dgkd", tuple(chain), num_epochs=EPOCHS,
                                          optimizer=c10.sgd(), loss=_dgkd_loss())
  return config
