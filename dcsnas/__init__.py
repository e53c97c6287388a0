"""dcsnas: person re-identification with self-attention and differentiable architecture search.

Importing the package is cheap: it imports no NNI, TensorBoard or torchvision; subpackages load what they need.
"""

__version__ = "0.1.0"
