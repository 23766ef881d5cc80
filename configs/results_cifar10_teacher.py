"""The teacher of the CIFAR results tables: resnet20 trained on CIFAR-10 (or CIFAR-100).

  python -m launch.train --config=configs/results_cifar10_teacher.py \
      --workdir=workdir/results/cifar10_teacher
  python -m launch.train --config=configs/results_cifar10_teacher.py:cifar100 \
      --workdir=workdir/results/cifar100_teacher

The protocol that fits a 2-core CPU (the results report gives the arithmetic): a resnet20
instead of the papers' resnet110, 20 epochs instead of 200, pad-4 crop + flip, SGD with
lr 0.1, momentum 0.9, weight decay 5e-4 (the short schedule's usual choice; the papers use
1e-4 over 200 epochs), batch 128, LR ×0.1 at 50 % and ×0.01 at 75 %; evaluated every epoch.
The students of the tables learn from this stage's exported last network (its export
directory is passed to them as ``config.teacher_dirs.teacher``).

Its row in docs/results.md (``get_report``):

  python -m launch.report \
      --table=configs/results_cifar10_teacher.py=docs/results/runs/cifar10_teacher \
      --table=configs/results_cifar10_teacher.py:cifar100=docs/results/runs/cifar100_teacher

(the README's Results section gives the whole command and how runs reach
``docs/results/runs/``).
"""

from configs import base
from configs import cifar10_teacher as c10

EPOCHS = 20


def get_config(dataset: str = "cifar10"):
  if dataset not in ("cifar10", "cifar100"):
    raise ValueError(f"dataset must be cifar10 or cifar100, got {dataset!r}")
  config = c10.cifar10_config()
  config.dataset.name = dataset
  config.checkpoint_every_epochs = 1
  config.stages.teacher = base.stage(
      "resnet20", "scratch", num_epochs=EPOCHS, num_seeds=1,
      optimizer=base.optimizer(name="sgd", learning_rate=0.1, momentum=0.9, weight_decay=5e-4,
                               schedule="step", decay_at=(0.5, 0.75), decay_factor=0.1))
  return config


# ResNet-20 trained alone under the papers' schedules, for comparison.
_PAPER = {
    "cifar10": (91.25, "He et al., Deep Residual Learning for Image Recognition (2016), "
                "Table 6", "164 epochs (64k steps of 128), crop + flip, weight decay 1e-4"),
    "cifar100": (69.06, "Tian et al., Contrastive Representation Distillation (2020), "
                 "Table 1", "240 epochs, crop + flip, best epoch"),
}


def get_report(dataset: str = "cifar10"):
  get_config(dataset)  # checks the name
  paper, source, protocol = _PAPER[dataset]
  return {
      "title": f"Teacher of the {dataset.upper().replace('CIFAR', 'CIFAR-')} tables",
      "notes": f"resnet20 trained from scratch on {dataset}, {EPOCHS} epochs with crop + "
               f"flip, one seed: the network the students of the table learn from.",
      "rows": [{"stage": "teacher", "label": "resnet20 (scratch)", "paper": paper,
                "source": source, "protocol": protocol}],
  }
