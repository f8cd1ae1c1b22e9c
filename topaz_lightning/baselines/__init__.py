"""Classical particle pickers (difference of Gaussians, template matching) for comparison, also as tzl-pick pickers."""

from topaz_lightning.baselines.classical import (
    average_precision,
    average_template,
    dog_picks,
    dog_score_map,
    pick_with_score_maps,
    template_picks,
    template_score_map,
)
from topaz_lightning.baselines.pickers import DoGPicker, TemplatePicker

__all__ = [
    "DoGPicker",
    "TemplatePicker",
    "average_precision",
    "average_template",
    "dog_picks",
    "dog_score_map",
    "pick_with_score_maps",
    "template_picks",
    "template_score_map",
]
