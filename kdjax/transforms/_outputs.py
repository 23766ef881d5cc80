"""Access to the logits inside a pytree of student outputs.

Output transforms receive the gradient with respect to the student's outputs: either the
logits array itself or a dict of outputs with a ``"logits"`` entry (plus features).
"""

import jax


def get_logits(outputs) -> jax.Array:
  if isinstance(outputs, dict):
    if "logits" not in outputs:
      raise ValueError(f"student outputs have no 'logits' entry; keys: {sorted(outputs)}.")
    return outputs["logits"]
  return outputs


def replace_logits(outputs, logits: jax.Array):
  if isinstance(outputs, dict):
    return {**outputs, "logits": logits}
  return logits
