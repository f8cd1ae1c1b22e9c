"""Pictures of picking results: PR curves, micrograph overlays of picks, score-map heatmaps.

``canvas`` holds what all figures share (colours, the Agg figure, saving), ``micrographs`` the
pictures of one micrograph (overlay, score map), ``curves`` the precision-recall plot.
"""

from topaz_lightning.plots.canvas import (
    DEFAULT_MAX_SIZE_PX,
    MATCHED_COLOR,
    TRUTH_COLOR,
    UNMATCHED_COLOR,
    contrast_stretch,
)
from topaz_lightning.plots.curves import plot_pr_curves, pr_curves_rgb, pr_point
from topaz_lightning.plots.micrographs import (
    overlay_rgb,
    plot_overlay,
    plot_score_map,
    score_map_rgb,
)

__all__ = [
    "DEFAULT_MAX_SIZE_PX",
    "TRUTH_COLOR",
    "MATCHED_COLOR",
    "UNMATCHED_COLOR",
    "plot_pr_curves",
    "pr_point",
    "plot_overlay",
    "plot_score_map",
    "pr_curves_rgb",
    "overlay_rgb",
    "score_map_rgb",
    "contrast_stretch",
]
