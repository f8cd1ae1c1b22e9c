"""The classical baselines as tzl-pick pickers (``picker=dog``, ``picker=template``): same picks pipeline, outputs and evaluation as a trained model.

Each picker turns its config (``configs/picker/<name>.yaml``) into a scorer and a card
(:class:`~topaz_lightning.picking.pickers.LoadedPicker`): the particle diameter (micrograph
pixels) and the downsampling factor are required; the NMS radius defaults to 1.25 particle
radii as for a model without one (``nms_radius_px_model=`` overrides it); micrographs are not
normalized by the pipeline (each score map standardizes its micrograph itself, as
:mod:`topaz_lightning.baselines.classical` does). No prior is known, so without a threshold or
``particles_per_micrograph`` every local maximum is written (what ``tzl-evaluate`` wants).
"""

from __future__ import annotations

import logging
from pathlib import Path

from topaz_lightning.baselines.classical import (
    average_template,
    dog_score_map,
    template_score_map,
)
from topaz_lightning.errors import ConfigError, InputError
from topaz_lightning.geometry import RunGeometry, check_downsample, coordinates_to_model_frame
from topaz_lightning.picking.pickers import LoadedPicker, Picker, ScoreMapNet, required_number

log = logging.getLogger("topaz_lightning")


class _ClassicalPicker(Picker):
    """The settings every classical picker needs: particle diameter and downsampling."""

    def __init__(self, particle_diameter_px: float | None = None, downsample: float | None = None):
        self.particle_diameter_px = required_number(
            self.name, "particle_diameter_px", particle_diameter_px, "40", minimum=0
        )
        if downsample is None:
            raise ConfigError(
                "picker.downsample",
                f"is required for picker={self.name}: the Fourier-crop factor the micrographs "
                "are scored at (1 = full size; e.g. picker.downsample=4)",
            )
        self.downsample = check_downsample(downsample, "picker.downsample")

    @property
    def radius_px_model(self) -> float:
        return self.particle_diameter_px / 2.0 / self.downsample

    def _loaded(self, net, record: dict, model_path: str | None) -> LoadedPicker:
        if model_path not in (None, ""):
            log.warning("picker=%s does not use model_path (%s)", self.name, model_path)
        geometry = RunGeometry(
            downsample=self.downsample,
            particle_radius_px=self.particle_diameter_px / 2.0,
            normalize="none",
        )
        record = {
            "name": self.name,
            "particle_diameter_px": self.particle_diameter_px,
            "downsample": self.downsample,
            **record,
        }
        return LoadedPicker(
            net=net,
            card={"geometry": geometry.to_dict(), "picker": record},
            source=f"picker={self.name}",
            record=record,
            sets_preprocessing=True,
        )


class DoGPicker(_ClassicalPicker):
    """Difference of Gaussians tuned to the particle radius (:func:`dog_score_map`): sigma
    r/sqrt(2) and ``ratio`` times that; dark blobs score high unless ``dark=false``."""

    name = "dog"

    def __init__(
        self,
        particle_diameter_px: float | None = None,
        downsample: float | None = None,
        ratio: float = 1.6,
        dark: bool = True,
    ):
        super().__init__(particle_diameter_px, downsample)
        self.ratio = required_number(self.name, "ratio", ratio, "1.6", minimum=1)
        if not isinstance(dark, bool):
            raise ConfigError("picker.dark", f"must be true or false, got {dark!r}")
        self.dark = dark

    def load(self, model_path: str | None = None, micrographs: str | None = None) -> LoadedPicker:
        net = ScoreMapNet(
            dog_score_map, radius_px=self.radius_px_model, ratio=self.ratio, dark=self.dark
        )
        return self._loaded(net, {"ratio": self.ratio, "dark": self.dark}, model_path)


class TemplatePicker(_ClassicalPicker):
    """Template matching (:func:`template_score_map`: cross-correlation of the standardized
    micrograph with a zero-mean template). The template is either an image file
    (``template_path``, micrograph pixels, downsampled with the micrographs) or the rotationally
    averaged mean of labeled particles (``particles``: a coordinate file in micrograph pixels, on
    the micrographs of ``particle_micrographs``, by default tzl-pick's ``micrographs``), boxed at
    ``box_px_model`` (default 3 particle radii, odd) like a reference-based picker."""

    name = "template"

    def __init__(
        self,
        particle_diameter_px: float | None = None,
        downsample: float | None = None,
        template_path: str | None = None,
        particles: str | None = None,
        particle_micrographs: str | None = None,
        box_px_model: int | None = None,
        rotational: bool = True,
    ):
        super().__init__(particle_diameter_px, downsample)
        if (template_path is None) == (particles is None):
            raise ConfigError(
                "picker.particles",
                "picker=template needs one template source: picker.particles=<labeled "
                "coordinates> (their rotational average) or picker.template_path=<image>"
                + (" (both were given)" if particles is not None else ""),
            )
        self.template_path = template_path
        self.particles = particles
        self.particle_micrographs = particle_micrographs
        if box_px_model is None:
            box_px_model = 2 * round(1.5 * self.radius_px_model) + 1
        self.box_px_model = int(
            required_number(self.name, "box_px_model", box_px_model, "31", minimum=2)
        )
        if not isinstance(rotational, bool):
            raise ConfigError("picker.rotational", f"must be true or false, got {rotational!r}")
        self.rotational = rotational

    def load(self, model_path: str | None = None, micrographs: str | None = None) -> LoadedPicker:
        if self.template_path is not None:
            template = self._template_from_file(Path(str(self.template_path)))
            source = {"template": "file"}
        else:
            template = self._template_from_particles(self.particle_micrographs or micrographs)
            source = {
                "template": "particles",
                "box_px_model": self.box_px_model,
                "rotational": self.rotational,
            }
        net = ScoreMapNet(template_score_map, tensors={"template": template})
        return self._loaded(net, source, model_path)

    def _template_from_file(self, path: Path):
        from topaz_lightning.io.micrographs import read_micrograph
        from topaz_lightning.preprocess import downsample

        template = downsample(read_micrograph(path), self.downsample)
        if float(template.std()) == 0:
            raise InputError("the template image is constant", path=path)
        log.info("template %s: %d x %d model px", path, template.shape[1], template.shape[0])
        return template

    def _template_from_particles(self, micrographs: str | None):
        from topaz_lightning.io.coordinates import read_coordinates
        from topaz_lightning.io.micrographs import list_micrographs, read_micrograph
        from topaz_lightning.preprocess import downsample

        if micrographs in (None, ""):
            raise ConfigError(
                "picker.particle_micrographs", "is required: the micrographs of picker.particles"
            )
        path = Path(str(self.particles))
        coordinates = read_coordinates(path)
        sources = list_micrographs(micrographs)
        names = [n for n in coordinates["micrograph"].unique() if n in sources]
        if not names:
            raise InputError(
                f"none of its micrographs is among {micrographs} (e.g. "
                f"{coordinates['micrograph'].iloc[0] if len(coordinates) else 'no rows'!r})",
                path=path,
            )
        images = {n: downsample(read_micrograph(sources[n]), self.downsample) for n in names}
        labeled = coordinates_to_model_frame(
            coordinates[coordinates["micrograph"].isin(names)], self.downsample
        )
        log.info(
            "template: the %s average of %d particle(s) on %d micrograph(s), box %d model px",
            "rotational" if self.rotational else "plain",
            len(labeled),
            len(names),
            self.box_px_model,
        )
        return average_template(images, labeled, self.box_px_model, rotational=self.rotational)


__all__ = ["DoGPicker", "TemplatePicker"]
