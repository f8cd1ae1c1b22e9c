"""Simulate a cryo-EM dataset with complete ground truth (micrographs, truth, split, labeled subsets).

The preset group ``simulate/`` holds every knob (tiny, demo, empiar10096_like, shapiro_like);
any knob can be overridden on the command line. A PNG contact sheet (micrograph with truth
circles, lowpassed crop, power spectrum with predicted Thon rings, particle gallery) is written
into the dataset directory unless ``contact_sheet=false``.

Example usage::

    tzl-simulate                                   # demo preset -> data/simulated/demo_seed0
    tzl-simulate simulate=shapiro_like seed=3 out_dir=data/shapiro num_workers=2
    tzl-simulate simulate=empiar10096_like simulate.num_micrographs=40 simulate.snr=0.03
"""

from __future__ import annotations

import logging
from pathlib import Path

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig

from topaz_lightning.cli._hydra import entry_point
from topaz_lightning.errors import ConfigError

log = logging.getLogger("topaz_lightning")


def run(cfg: DictConfig) -> Path:
    """Simulate the dataset described by ``cfg`` (the resolved ``simulate`` config); return its path."""
    from topaz_lightning.simulate import SimulationSettings, simulate_dataset
    from topaz_lightning.simulate.contact_sheet import dataset_contact_sheet
    from topaz_lightning.utils.atomic import check_writable

    try:
        settings = instantiate(cfg.simulate, _convert_="all")
    except InstantiationException as err:
        # report an impossible setting as the one-line ConfigError, not Hydra's wrapper
        if isinstance(err.__cause__, (ConfigError, TypeError)):
            cause = err.__cause__
            if isinstance(cause, TypeError):
                raise ConfigError("simulate", str(cause)) from None
            raise cause from None
        raise
    if not isinstance(settings, SimulationSettings):
        raise ConfigError(
            "simulate._target_", "must build topaz_lightning.simulate.SimulationSettings"
        )
    if cfg.out_dir is None:
        raise ConfigError("out_dir", "set the output directory")
    # the default contact sheet lives in the freshly built dataset; one elsewhere may already exist
    sheet = None
    if cfg.contact_sheet and cfg.contact_sheet_path:
        sheet = check_writable(cfg.contact_sheet_path, bool(cfg.overwrite))
    out = simulate_dataset(
        cfg.out_dir,
        preset=settings,
        seed=int(cfg.seed),
        overwrite=bool(cfg.overwrite),
        num_workers=int(cfg.num_workers),
    )
    log.info("wrote %s (%d micrographs)", out, settings.num_micrographs)
    print(f"simulated dataset: {out}")
    if cfg.contact_sheet:
        if sheet is None:
            sheet = out / "contact_sheet.png"
        dataset_contact_sheet(out, sheet, overwrite=True)
        print(f"contact sheet: {sheet}")
    return out


@entry_point("simulate")
def main(cfg: DictConfig) -> None:
    """Console entry point ``tzl-simulate``."""
    run(cfg)


if __name__ == "__main__":
    main()
