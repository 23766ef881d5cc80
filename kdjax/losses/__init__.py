"""Pure, per-example distillation losses.

Every loss takes logits (or features) with any leading batch shape, returns one value per
example (never reduced over the batch), treats the teacher as a constant and raises
``ValueError`` naming the offending shapes or values. ``reduce_mean`` is the one place where
per-example values become a scalar.
"""

from kdjax.losses.decoupled import dkd
from kdjax.losses.features import attention_map, attention_transfer, hint
from kdjax.losses.hinton import cross_entropy, kd
from kdjax.losses.matching import annealing, logits_matching
from kdjax.losses.multi_teacher import dgkd, ensemble_kd, teacher_keep_mask
from kdjax.losses.pruning import dkp
from kdjax.losses.reduction import reduce_mean

__all__ = [
    "annealing",
    "attention_map",
    "attention_transfer",
    "cross_entropy",
    "dgkd",
    "dkd",
    "dkp",
    "ensemble_kd",
    "hint",
    "kd",
    "logits_matching",
    "reduce_mean",
    "teacher_keep_mask",
]
