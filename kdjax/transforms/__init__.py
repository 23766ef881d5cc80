"""Optax transformations of the gradient with respect to the student's outputs.

A train step pulls ``transformed(dL/d outputs)`` back through the student (one ``vjp``), so
these compose with ``optax.chain`` and any optimizer at no extra cost (DESIGN §5).
"""

from kdjax.transforms.pruning import DKPState, dkp
from kdjax.transforms.zero_mean import zero_mean_logit_gradients

__all__ = ["DKPState", "dkp", "zero_mean_logit_gradients"]
