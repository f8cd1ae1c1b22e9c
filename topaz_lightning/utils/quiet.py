"""Targeted filters for third-party notices every command would otherwise print (nothing else)."""

from __future__ import annotations

import logging
import warnings

#: torch 2.13 deprecated ``LeafSpec``; Lightning's own pytree helper still builds one on every
#: batch transfer, so each run printed the FutureWarning (twice). Nothing a user can act on.
LEAFSPEC_MESSAGE = r"`isinstance\(treespec, LeafSpec\)` is deprecated"

#: Lightning's advertisements (litlogger, litmodels), logged at INFO on every Trainer start
TIP_PREFIX = "💡 Tip:"

#: Lightning's hardware banner when the hardware is absent ("GPU available: False, used: False"):
#: it says nothing on a CPU machine; a GPU that is present but unused is still reported
ABSENT_HARDWARE_PREFIXES = ("GPU available: False", "TPU available: False", "HPU available: False")

#: the loggers Lightning's rank-zero messages go through (package and unified ``lightning`` names)
RANK_ZERO_LOGGERS = (
    "pytorch_lightning.utilities.rank_zero",
    "lightning.pytorch.utilities.rank_zero",
    "lightning_fabric.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
)


class _DropTips(logging.Filter):
    """Drop Lightning's product tips and absent-hardware banner; every other record passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        return not message.startswith((TIP_PREFIX, *ABSENT_HARDWARE_PREFIXES))


_TIP_FILTER = _DropTips()


def quiet_third_party() -> None:
    """Install the filters (idempotent): the LeafSpec FutureWarning, Lightning's tips and its
    banner for absent hardware only.

    Matched by exact message and category, so any other deprecation or warning (ours, torch's,
    Lightning's) is still shown.
    """
    warnings.filterwarnings("ignore", message=LEAFSPEC_MESSAGE, category=FutureWarning)
    for name in RANK_ZERO_LOGGERS:
        logger = logging.getLogger(name)
        if _TIP_FILTER not in logger.filters:
            logger.addFilter(_TIP_FILTER)
