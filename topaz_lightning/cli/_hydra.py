"""Shared plumbing for the Hydra entry points: config location, run stamping, clean error exits."""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

import hydra
from omegaconf import DictConfig

from topaz_lightning.cli.overrides import CONFIG_DIR
from topaz_lightning.errors import (
    EXIT_USER_ERROR,
    ConfigError,
    InputError,
    OutputExistsError,
    PartialFailureError,
)
from topaz_lightning.utils.config import require  # noqa: F401 - the entry points' name for it

log = logging.getLogger("topaz_lightning")


def output_dir() -> Path:
    """The current Hydra run's output directory (``hydra.runtime.output_dir``)."""
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)


def resolve_output(cfg: DictConfig, key: str) -> Path:
    """The path in ``cfg[key]``; a relative one is taken inside ``cfg.output_dir``."""
    target = Path(str(cfg[key]))
    return target if target.is_absolute() else Path(str(cfg.output_dir)) / target


USER_ERRORS = (InputError, ConfigError, OutputExistsError)


def _user_error(err: BaseException) -> BaseException | None:
    """The bad-input error behind ``err``, if any.

    Hydra's ``instantiate`` wraps errors raised in constructors in an InstantiationException;
    walk the cause chain so a missing file still ends in a one-line message, not a traceback.
    """
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, USER_ERRORS):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def entry_point(config_name: str) -> Callable[[Callable[[DictConfig], object]], Callable[[], None]]:
    """Decorate ``fn(cfg)`` as a Hydra app reading ``configs/<config_name>.yaml``.

    The resolved config (with version, time and command line) is saved into the run's output
    directory before ``fn`` runs, unless the config sets ``hydra.output_subdir: null``. Bad input
    and impossible settings end the process with exit status 2 and a one-line message naming the
    file/key, instead of a traceback; a multi-file job whose some inputs failed
    (``PartialFailureError``) exits with status 3.
    """

    def decorate(fn: Callable[[DictConfig], object]) -> Callable[[], None]:
        @functools.wraps(fn)
        def run(cfg: DictConfig):
            from hydra.core.hydra_config import HydraConfig

            from topaz_lightning.utils.distributed import is_launch_rank_zero
            from topaz_lightning.utils.quiet import quiet_third_party
            from topaz_lightning.utils.runinfo import save_run_config

            # Lightning's LeafSpec deprecation and product tips, printed on every run otherwise
            quiet_third_party()
            # DDP re-launches this script once per extra rank: only rank 0 stamps the run;
            # a command whose config sets hydra.output_subdir: null (tzl-convert) keeps no stamps
            try:
                from topaz_lightning.cli.validate import validate

                # every setting is checked here, before the command reads any data (and before
                # the run is stamped: a refused command leaves no config.<time>.yaml behind)
                validate(config_name, cfg)
                if HydraConfig.get().output_subdir is not None and is_launch_rank_zero():
                    save_run_config(cfg, output_dir())
                return fn(cfg)
            except PartialFailureError as err:
                # the other inputs were done; the failures are listed in failures.tsv
                log.error("%s", err)
                print(f"error: {err}", file=sys.stderr)
                sys.exit(err.exit_status)
            except Exception as err:
                user_error = _user_error(err)
                if user_error is None:
                    raise
                log.error("%s", user_error)
                print(f"error: {user_error}", file=sys.stderr)
                sys.exit(EXIT_USER_ERROR)

        hydra_main = hydra.main(
            version_base="1.3", config_path=CONFIG_DIR, config_name=config_name
        )(run)

        @functools.wraps(fn)
        def main() -> None:
            from topaz_lightning.cli.overrides import (
                check_added_keys,
                check_output_locations,
                command_line_overrides,
                composition_error,
                runs_a_job,
            )
            from topaz_lightning.utils.allocator import keep_freed_memory

            # reuse freed memory instead of page-faulting it back in (utils.allocator)
            keep_freed_memory()
            argv = sys.argv[1:]
            try:
                # before Hydra creates the run directory and its log file
                if runs_a_job(argv):
                    check_output_locations(argv)
                check_added_keys(config_name, command_line_overrides(argv))
            except USER_ERRORS as err:
                print(f"error: {err}", file=sys.stderr)
                sys.exit(EXIT_USER_ERROR)
            # Hydra's composition errors come back to us as exceptions (one line, exit 2)
            # instead of its several-line advice with exit 1
            previous = os.environ.get("HYDRA_FULL_ERROR")
            os.environ["HYDRA_FULL_ERROR"] = "1"
            try:
                hydra_main()
            except Exception as err:
                user_error = composition_error(config_name, err, command_line_overrides(argv))
                if user_error is None:
                    raise
                print(f"error: {user_error}", file=sys.stderr)
                sys.exit(EXIT_USER_ERROR)
            finally:
                if previous is None:
                    os.environ.pop("HYDRA_FULL_ERROR", None)
                else:
                    os.environ["HYDRA_FULL_ERROR"] = previous

        return main

    return decorate
