"""Which settings a continued training run may change: one list for ``tzl-train resume=`` (read
before Hydra, so this module imports nothing heavy) and for ``train()``'s continuation check."""

from __future__ import annotations

__all__ = ["CONTINUE_MAY_CHANGE", "RESUME_MAY_CHANGE", "may_change"]

#: what ``tzl-train resume=<run dir>`` accepts on its command line: how far to train and how
#: often to checkpoint or report; nothing that changes the batches or the weights of a step
RESUME_MAY_CHANGE = (
    "trainer.max_steps",
    "callbacks.model_checkpoint",
    "callbacks.progress_bar",
    "callbacks.duration_estimate",
)
#: settings a continued run may change (besides RESUME_MAY_CHANGE): where things go, how it was
#: started
CONTINUE_MAY_CHANGE = ("ckpt_path", "overwrite", "paths", "resume", *RESUME_MAY_CHANGE)


def may_change(key: str, allowed: tuple[str, ...] = RESUME_MAY_CHANGE) -> bool:
    """True when the dotted ``key`` is one of ``allowed`` or lies below one of them."""
    key = key.rstrip(".")
    return any(key == k or key.startswith(f"{k}.") for k in allowed)
