"""Re-ID models: backbones as named stages, heads (BNNeck, PCB/RPP), and the model builder."""

from dcsnas.models.backbones import BACKBONES, Backbone
from dcsnas.models.builder import AttentionPlacement, ModelConfig, ReIDModel, create_model, list_models

__all__ = ["BACKBONES", "AttentionPlacement", "Backbone", "ModelConfig", "ReIDModel", "create_model", "list_models"]
