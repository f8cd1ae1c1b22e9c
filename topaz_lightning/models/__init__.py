"""Region classifiers (Conv31, ResNet8, ResNet16), the autoencoder decoder, and model files."""

from topaz_lightning.models.base import PatchClassifier, receptive_field
from topaz_lightning.models.conv31 import Conv31
from topaz_lightning.models.decoder import Decoder
from topaz_lightning.models.io import load_model, save_model
from topaz_lightning.models.resnet import ResidualBlock, ResNet, ResNet8, ResNet16

__all__ = [
    "Conv31",
    "Decoder",
    "PatchClassifier",
    "ResNet",
    "ResNet8",
    "ResNet16",
    "ResidualBlock",
    "load_model",
    "receptive_field",
    "save_model",
]
