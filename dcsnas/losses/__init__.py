"""Training losses."""

from dcsnas.losses.information_bottleneck import InformationBottleneck, kmeans

__all__ = ["InformationBottleneck", "kmeans"]
