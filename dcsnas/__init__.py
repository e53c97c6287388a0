"""dcsnas: person re-identification with self-attention and differentiable architecture search.

Importing the package is cheap: it imports no NNI, TensorBoard or torchvision; subpackages load what they need.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    """The Python API, imported on first use: ``dcsnas.FeatureExtractor`` (:mod:`dcsnas.extract`),
    ``dcsnas.create_model`` and ``dcsnas.list_models`` (:mod:`dcsnas.models.builder`)."""
    if name == "FeatureExtractor":
        from dcsnas.extract import FeatureExtractor

        return FeatureExtractor
    if name in ("create_model", "list_models"):
        from dcsnas.models import builder

        return getattr(builder, name)
    raise AttributeError(f"module 'dcsnas' has no attribute {name!r}")
