"""Operating points of a pick PR curve shared by tzl-evaluate and the held-out picking callback: the count tzl-pick keeps by default."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["expected_counts", "expected_count_mark"]


def expected_counts(
    geometry: Any, shapes_px_model: Mapping[str, tuple[float, float]]
) -> dict[str, int]:
    """The number of picks ``tzl-pick`` keeps by default on each micrograph: the count the run's
    prior expects, ``pi * H * W / disk_area(label_radius_px_model)``
    (:func:`topaz_lightning.data.prior.expected_particles_per_micrograph`), rounded to the
    nearest integer as ``tzl-pick`` rounds it.

    ``geometry``: a :class:`~topaz_lightning.geometry.RunGeometry` (its ``pi`` and
    ``label_radius_px_model``); ``shapes_px_model``: ``{name: (H, W)}`` in the model frame.
    Empty when the geometry has no prior or no label radius.
    """
    from topaz_lightning.data.prior import expected_particles_per_micrograph

    pi = getattr(geometry, "pi", None)
    radius_px_model = getattr(geometry, "label_radius_px_model", None)
    if pi is None or not radius_px_model:
        return {}
    return {
        str(name): int(round(expected_particles_per_micrograph(pi, shape, radius_px_model)))
        for name, shape in shapes_px_model.items()
    }


def expected_count_mark(
    evaluation: Any, counts: Mapping[str, int]
) -> tuple[str, float, float] | None:
    """The default count's operating point on ``evaluation``'s PR curve as a labelled mark
    ``(text, recall, precision)``: the best ``counts[name]`` picks of each micrograph
    (:func:`topaz_lightning.plots.pr_point`); None without counts or when nothing is selected."""
    from topaz_lightning.plots import pr_point

    if not counts:
        return None
    point = pr_point(evaluation, per_micrograph=counts)
    if point is None:
        return None
    mean = sum(counts.values()) / len(counts)
    return (f"default: pi's count ({mean:.0f}/micrograph)", *point)
