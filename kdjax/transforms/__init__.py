"""Optax transformations of the gradient with respect to the student's outputs, and of
parameter gradients.

A train step pulls ``transformed(dL/d outputs)`` back through the student (one ``vjp``), so
the output transformations (``dkp``, ``zero_mean_logit_gradients``) compose with
``optax.chain`` and any optimizer at no extra cost (DESIGN §5). ``reverse_gradients`` acts
on parameter gradients: a method chains it in front of the optimizer.
"""

from kdjax.transforms.gradient_reversal import reverse_gradients
from kdjax.transforms.pruning import DKPState, dkp
from kdjax.transforms.zero_mean import zero_mean_logit_gradients

__all__ = ["DKPState", "dkp", "reverse_gradients", "zero_mean_logit_gradients"]
