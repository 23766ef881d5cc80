"""Keeps TFDS's notices about choices kdjax made on purpose out of the user's terminal.

kdjax reads TFDS datasets without TensorFlow and decodes PNG with Pillow (DESIGN §6), and
prepares the bundled digits itself; TFDS then logs, through absl, that OpenCV is not
installed and that a freshly prepared folder has no ``dataset_info.json`` yet. Printed to
stderr in the middle of training, they break the progress bar on every run and ask the
user to act on nothing. Every other message of TFDS passes through.
"""

import logging

# Prefixes of the TFDS messages that describe kdjax's own choices, not a problem.
_EXPECTED = ("OpenCV is not installed", "Variant folder ")


class ExpectedTfdsNotices(logging.Filter):
  """Drops TFDS's warnings about OpenCV and about folders it is preparing.

  Example:
    >>> notice = logging.LogRecord("absl", logging.WARNING, "tensorflow_datasets/core/x.py",
    ...                            1, "OpenCV is not installed. We recommend ...", None, None)
    >>> ExpectedTfdsNotices().filter(notice)
    False
  """

  def filter(self, record: logging.LogRecord) -> bool:
    if "tensorflow_datasets" not in record.pathname:
      return True
    return not str(record.msg).startswith(_EXPECTED)


def install() -> None:
  """Adds the filter to absl's logger, once per process (TFDS logs through absl).

  ``kdjax.data`` calls it when imported; calling it again adds nothing.

  Example:
    >>> install()
    >>> sum(isinstance(f, ExpectedTfdsNotices) for f in logging.getLogger("absl").filters)
    1
  """
  logger = logging.getLogger("absl")
  if not any(isinstance(f, ExpectedTfdsNotices) for f in logger.filters):
    logger.addFilter(ExpectedTfdsNotices())
