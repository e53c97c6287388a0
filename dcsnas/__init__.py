"""dcsnas: person re-identification with self-attention and differentiable architecture search.

Importing the package is cheap: it imports no NNI, TensorBoard or torchvision; subpackages load what they need.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    """``dcsnas.FeatureExtractor`` (:mod:`dcsnas.extract`), imported on first use."""
    if name == "FeatureExtractor":
        from dcsnas.extract import FeatureExtractor

        return FeatureExtractor
    raise AttributeError(f"module 'dcsnas' has no attribute {name!r}")
