"""Region classifiers (Conv31; Topaz's ResNet8/16; PReLU ResNets), the decoder, and model files."""

from topaz_lightning.models.base import PatchClassifier, receptive_field
from topaz_lightning.models.conv31 import Conv31
from topaz_lightning.models.decoder import Decoder
from topaz_lightning.models.ensemble import EnsembleNet, HomogeneousEnsembleNet
from topaz_lightning.models.io import (
    CARD_VERSION,
    ModelCard,
    checkpoint_weights,
    load_model,
    read_model_card,
    read_torch_file,
    save_model,
)
from topaz_lightning.models.resnet import PReLUResNet8, PReLUResNet16, ResidualBlock, ResNet
from topaz_lightning.models.topaz_resnet import ResNet8, ResNet16, TopazResNet

#: the region classifiers by their configs/model/<name>.yaml name (default widths), for scripts
MODELS: dict[str, type[PatchClassifier]] = {
    "conv31": Conv31,
    "resnet8": ResNet8,
    "resnet16": ResNet16,
    "resnet8_prelu": PReLUResNet8,
    "resnet16_prelu": PReLUResNet16,
}

__all__ = [
    "CARD_VERSION",
    "MODELS",
    "Conv31",
    "Decoder",
    "EnsembleNet",
    "HomogeneousEnsembleNet",
    "ModelCard",
    "PReLUResNet8",
    "PReLUResNet16",
    "PatchClassifier",
    "ResNet",
    "ResNet8",
    "ResNet16",
    "ResidualBlock",
    "TopazResNet",
    "checkpoint_weights",
    "load_model",
    "read_model_card",
    "read_torch_file",
    "receptive_field",
    "save_model",
]
