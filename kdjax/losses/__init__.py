"""Pure, per-example distillation losses.

Every loss takes logits (or features) with any leading batch shape, returns one value per
example (never reduced over the batch), treats the teacher as a constant and raises
``ValueError`` naming the offending shapes or values. ``reduce_mean`` is the one place where
per-example values become a scalar.
"""

from kdjax.losses.continuation import continuation
from kdjax.losses.curriculum_temperature import ctkd
from kdjax.losses.decoupled import dkd
from kdjax.losses.divergences import jensen_shannon, reverse_kl, total_variation
from kdjax.losses.features import attention_map, attention_transfer, hint
from kdjax.losses.hinton import cross_entropy, kd
from kdjax.losses.matching import annealing, logits_matching
from kdjax.losses.multi_teacher import dgkd, ensemble_kd, teacher_keep_mask
from kdjax.losses.pruning import dkp
from kdjax.losses.reduction import reduce_mean
from kdjax.losses.relational import dist, dist_inter_class, dist_intra_class
from kdjax.losses.sparse import SparseTargets, sparse_kd, sparse_targets
from kdjax.losses.standardization import standardize_logits

__all__ = [
    "SparseTargets",
    "annealing",
    "attention_map",
    "attention_transfer",
    "continuation",
    "cross_entropy",
    "ctkd",
    "dgkd",
    "dkd",
    "dist",
    "dist_inter_class",
    "dist_intra_class",
    "dkp",
    "ensemble_kd",
    "hint",
    "jensen_shannon",
    "kd",
    "logits_matching",
    "reduce_mean",
    "reverse_kl",
    "sparse_kd",
    "sparse_targets",
    "standardize_logits",
    "teacher_keep_mask",
    "total_variation",
]
