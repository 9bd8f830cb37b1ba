"""The model zoo. Importing this package registers every model in :data:`MODELS`."""

# Registration order is listing order: linear models, LeNets, ours.
# isort: off
from digitlab.models import ensemble, line, linear, lenet, modern  # noqa: F401

# isort: on
from digitlab.models.registry import (
    CAFFE,
    KERAS,
    MNIST_01,
    MNIST_STD,
    MODELS,
    SYMMETRIC,
    ModelEntry,
    Normalization,
    count_params,
    create_model,
    get_entry,
    list_models,
    register_model,
)

__all__ = [
    "CAFFE",
    "KERAS",
    "MNIST_01",
    "MNIST_STD",
    "MODELS",
    "SYMMETRIC",
    "ModelEntry",
    "Normalization",
    "count_params",
    "create_model",
    "get_entry",
    "list_models",
    "register_model",
]
