"""Input pipelines: TFDS data sources read with grain, and the embedded digits dataset."""

from kdjax.data.pipeline import (
    AUGMENTATIONS,
    DATA_DIR_ENV,
    Augmentation,
    DatasetInfo,
    dataset_info,
    default_data_dir,
    eval_batches,
    image_shape,
    num_classes,
    num_train,
    supported_datasets,
    train_iterator,
)

__all__ = [
    "AUGMENTATIONS",
    "DATA_DIR_ENV",
    "Augmentation",
    "DatasetInfo",
    "dataset_info",
    "default_data_dir",
    "eval_batches",
    "image_shape",
    "num_classes",
    "num_train",
    "supported_datasets",
    "train_iterator",
]
