"""CIFAR-100: resnet110 → resnet8 by KD toward the teacher's top 10 classes and a tail bucket.

The protocol of ``cifar100_resnet8.py`` (TAKD's: no augmentation, 160 epochs, batch 128),
whose teacher and KD stages this run shares (same workdir, reused when finished). The
``sparse_kd`` stage is that KD (CE 0.1 + 0.9·T²·KL at T = 4) with the teacher's targets cut
to its 10 most probable classes plus one bucket for the other 90, the student's
probabilities taken over all 100 classes; its teacher cache keeps 10 of the 100 logits per
example (plus their class indices). Against the KD stage it measures what the tail's shape
is worth.

  python -m launch.train --config=configs/cifar100_sparse_kd.py --workdir=workdir/cifar100_noaug

Reference: KD in the same run (``kd_resnet8``).
"""

from configs import base, cifar100_resnet8

TOP_K = 10


def get_config(lr_schedule: str = "intended"):
  config = cifar100_resnet8.get_config(lr_schedule)
  protocol = config.stages
  config.stages = base.stages()
  config.stages.teacher_resnet110 = protocol.teacher_resnet110
  config.stages.kd_resnet8 = protocol.kd_resnet8
  config.stages.sparse_kd_resnet8 = base.stage(
      "resnet8", "sparse_kd", ("teacher_resnet110",), num_epochs=protocol.kd_resnet8.num_epochs,
      optimizer=protocol.kd_resnet8.optimizer, loss=dict(top_k=TOP_K))
  return config
