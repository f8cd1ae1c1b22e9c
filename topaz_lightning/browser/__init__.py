"""A pick browser: one self-contained static HTML page to look at picks and move a threshold.

:func:`write_pick_browser` writes a page that needs no server and no network: the script, the
style, the picks and the thumbnails (JPEG, base64) are all inside the one file. Per micrograph it
shows a downsampled, contrast-stretched thumbnail with the picks drawn as circles of the particle
diameter; a threshold slider and a top-k box redraw every micrograph in the browser, with pick
counts per micrograph and in total beside the count expected from the model's prior. With true
particles the picks are coloured matched / false and the missed particles are drawn, with the
pooled precision-recall curve and the current setting marked on it.

Matching with truth is done once, here, with the greedy-by-score one-to-one matching
(``metrics.match_picks(method="score")``): picks in order of descending score each take the
nearest free particle within the match distance. A pick's status never depends on picks of lower
score, so the matching of the picks above any threshold (or the top k of a micrograph) is the
full matching restricted to them, and the page can colour and count at any setting exactly.

Scores in the page are rounded to 4 decimals (logits); :func:`pick_counts` is the Python-side
count the page shows at a setting.
"""

from topaz_lightning.browser.evaluation import write_evaluation_browser
from topaz_lightning.browser.page import PAGE_SIZE, write_pick_browser
from topaz_lightning.browser.picks import SCORE_DECIMALS, expected_particles, pick_counts
from topaz_lightning.browser.thumbnails import THUMBNAIL_MAX_SIDE_PX, thumbnail

__all__ = [
    "PAGE_SIZE",
    "THUMBNAIL_MAX_SIDE_PX",
    "SCORE_DECIMALS",
    "expected_particles",
    "pick_counts",
    "thumbnail",
    "write_evaluation_browser",
    "write_pick_browser",
]
