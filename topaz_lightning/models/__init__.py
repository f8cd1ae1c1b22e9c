"""Region classifiers (Conv31; Topaz's ResNet8/16; PReLU ResNets), the decoder, and model files."""

from topaz_lightning.models.base import PatchClassifier, receptive_field
from topaz_lightning.models.conv31 import Conv31
from topaz_lightning.models.decoder import Decoder
from topaz_lightning.models.io import load_model, save_model
from topaz_lightning.models.resnet import PReLUResNet8, PReLUResNet16, ResidualBlock, ResNet
from topaz_lightning.models.topaz_resnet import ResNet8, ResNet16, TopazResNet

__all__ = [
    "Conv31",
    "Decoder",
    "PReLUResNet8",
    "PReLUResNet16",
    "PatchClassifier",
    "ResNet",
    "ResNet8",
    "ResNet16",
    "ResidualBlock",
    "TopazResNet",
    "load_model",
    "receptive_field",
    "save_model",
]
