"""The training-curve picture of a run: loss terms and held-out metrics over optimizer steps, from
the CSV log (``logs/csv/version_*/metrics.csv``)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd

from topaz_lightning.errors import InputError
from topaz_lightning.plots.canvas import _new_figure, _save

__all__ = ["plot_training_curve", "read_training_log"]

#: held-out metrics drawn in the lower panel, in this order, when the log has them
VAL_METRICS = (
    "val/aupr",
    "val/precision@0.9",
    "val/best_f1",
    "val/region_aupr",
    "val/patch_aupr",
)


def _version_number(path: Path) -> int:
    match = re.fullmatch(r"version_(\d+)", path.parent.name)
    return int(match.group(1)) if match else -1


def read_training_log(log_dir: str | os.PathLike) -> pd.DataFrame:
    """The metrics of one run, from ``metrics.csv`` in ``log_dir`` or its ``version_*`` folders.

    A continued run writes a new version folder that starts at its checkpoint's step; rows of
    earlier versions from that step on (steps the interrupted invocation did after its last
    checkpoint and the continuation redid) are dropped, so each step appears once, from the
    invocation that counts. Returns the rows sorted by ``step`` (empty without a log). A file
    that is not a CSV log with a ``step`` column is an InputError naming it.
    """
    root = Path(log_dir)
    files = [root / "metrics.csv"] if (root / "metrics.csv").is_file() else []
    files += sorted(root.glob("version_*/metrics.csv"), key=_version_number)
    tables: list[pd.DataFrame] = []
    for path in files:
        try:
            table = pd.read_csv(path)
        except pd.errors.EmptyDataError:
            continue
        except (pd.errors.ParserError, UnicodeDecodeError) as err:
            raise InputError(f"not a CSV metrics log ({err})", path=path) from err
        if "step" not in table.columns:
            raise InputError("a CSV metrics log needs a 'step' column", path=path)
        table = table[pd.to_numeric(table["step"], errors="coerce").notna()]
        if table.empty:
            continue
        first = table["step"].min()
        tables = [t[t["step"] < first] for t in tables]
        tables.append(table)
    tables = [t for t in tables if not t.empty]
    if not tables:
        return pd.DataFrame({"step": []})
    return pd.concat(tables, ignore_index=True).sort_values("step", kind="stable")


def _train_columns(table: pd.DataFrame) -> list[str]:
    columns = [c for c in table.columns if c.startswith("train/") and table[c].notna().any()]
    # the total first, then the objective's terms (and the decoder's recon) by name
    return sorted(columns, key=lambda c: (c != "train/loss", c))


def plot_training_curve(
    log: pd.DataFrame | str | os.PathLike,
    path: str | os.PathLike,
    overwrite: bool = False,
    title: str | None = None,
) -> Path:
    """Save the training curves of ``log`` (a table from :func:`read_training_log`, or a log
    directory) to ``path`` (.png, .pdf or .svg; atomic, refused if it exists unless ``overwrite``).

    Upper panel: ``train/loss`` and every ``train/<term>`` the objective (and decoder) logged,
    against the optimizer step (a log scale when every value is positive and they span more than
    a factor 100). Lower panel, when the log has any: the held-out metrics of
    :data:`VAL_METRICS` (0 to 1), with the best ``val/aupr`` marked. An InputError when the log
    has no ``train/`` or ``val/`` column to draw.
    """
    table = log if isinstance(log, pd.DataFrame) else read_training_log(log)
    train_cols = _train_columns(table)
    val_cols = [c for c in VAL_METRICS if c in table.columns and table[c].notna().any()]
    if not train_cols and not val_cols:
        raise InputError("the training log has no train/ or val/ values to draw", path=path)
    panels = [p for p in (train_cols, val_cols) if p]
    fig = _new_figure(800, 300 * len(panels) + 40)
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    if train_cols:
        ax = axes[0]
        values = []
        for column in train_cols:
            rows = table[["step", column]].dropna()
            values.append(rows[column].to_numpy())
            width = 1.6 if column == "train/loss" else 1.0
            ax.plot(rows["step"], rows[column], label=column, linewidth=width)
        finite = pd.Series([v for chunk in values for v in chunk]).dropna()
        if len(finite) and finite.min() > 0 and finite.max() / finite.min() > 100:
            ax.set_yscale("log")
        ax.set_ylabel("training loss")
        ax.legend(fontsize=8, loc="best")
        ax.grid(alpha=0.3)
    if val_cols:
        ax = axes[-1]
        for column in val_cols:
            rows = table[["step", column]].dropna()
            ax.plot(rows["step"], rows[column], marker="o", markersize=3, label=column)
        if "val/aupr" in val_cols:
            rows = table[["step", "val/aupr"]].dropna()
            best = rows.loc[rows["val/aupr"].idxmax()]
            ax.plot(best["step"], best["val/aupr"], marker="*", markersize=12, color="black")
            ax.text(
                0.01,
                0.97,
                f"best val/aupr {best['val/aupr']:.3f} at step {int(best['step'])} (star)",
                transform=ax.transAxes,
                va="top",
                fontsize=8,
            )
        ax.set_ylim(0, 1.02)
        ax.set_ylabel("held-out")
        ax.legend(fontsize=8, loc="best")
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("optimizer step")
    if title:
        axes[0].set_title(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path, overwrite)
