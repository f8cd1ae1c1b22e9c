"""The command line before Hydra runs: output locations, and one-line errors for unknown or misplaced keys.

Hydra's own messages for a misspelled key ("use +key=") are several lines, exit 1, and following
their advice only moves the error. Every ``tzl-*`` command instead ends with exit status 2 and one
line naming the key and, where it can tell, the key meant ("did you mean model_path=?") or the
config group that has it ("data.micrographs needs data=files").
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from topaz_lightning.errors import ConfigError, InputError
from topaz_lightning.utils.atomic import unwritable_ancestor

#: command-line keys that name a directory a command creates and writes into
OUTPUT_DIR_KEYS = ("output_dir", "out_dir", "hydra.run.dir", "hydra.sweep.dir")
#: Hydra flags that take a value (the next argument) and flags that stop a run
_FLAGS_WITH_VALUE = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name"}
_FLAGS_WITH_VALUE |= {"-cn", "--config-dir", "-cd", "--experimental-rerun", "--info", "-i"}
_NO_RUN_FLAGS = {"--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "-i"}
_NO_RUN_FLAGS |= {"--shell-completion", "-sc", "--version"}


def command_line_overrides(argv: Sequence[str]) -> list[str]:
    """The ``key=value`` overrides of a command line (flags and their values left out)."""
    overrides, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in _FLAGS_WITH_VALUE:
            skip = True
            continue
        if arg.startswith("-") and not arg.startswith(("-=",)):
            continue
        if "=" in arg or arg.startswith("~"):
            overrides.append(arg)
    return overrides


def runs_a_job(argv: Sequence[str]) -> bool:
    """False for ``--help``, ``--cfg job`` and the like: they print and create nothing."""
    return not any(arg in _NO_RUN_FLAGS or arg.startswith("--cfg=") for arg in argv)


def check_output_locations(argv: Sequence[str]) -> None:
    """Refuse an output directory given on the command line that cannot be one.

    Run before Hydra creates the run directory and its log file, so that a path that is a
    regular file, or lies below one, or in a directory that does not let us create files, ends
    in one line (exit 2) instead of a traceback from Hydra's logging set-up.
    """
    for override in command_line_overrides(argv):
        key, _, value = override.lstrip("+").partition("=")
        if key not in OUTPUT_DIR_KEYS or not value or "${" in value or "," in value:
            continue
        path = Path(value.strip("'\""))
        check_output_directory(path, key)


def check_output_directory(path: Path, key: str) -> None:
    """``path`` is, or can become, a directory we can write into; else InputError naming it."""
    if path.is_symlink() and not path.exists():
        raise InputError(f"{key} is a dangling symbolic link", path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{key} must be a directory, but a file of that name exists", path)
    parent, problem = unwritable_ancestor(path)
    if problem:
        raise InputError(f"{key} cannot be created or written: this path {problem}", parent)


# ------------------------------------------------------------------------------------------------
# unknown keys


#: topaz_lightning/configs: in a checkout a link to the top-level configs/, in a wheel a copy of it
CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "configs")


def _config_dir() -> Path:
    return Path(CONFIG_DIR)


def config_groups(config_dir: Path | None = None) -> list[str]:
    """Config group names (``data``, ``model``, ``trainer``, ...): folders of yaml files."""
    root = config_dir or _config_dir()
    return sorted(p.name for p in root.iterdir() if p.is_dir() and any(p.glob("*.yaml")))


def _flatten(node, prefix: str = "") -> Iterable[str]:
    from omegaconf import DictConfig

    if isinstance(node, DictConfig):
        for key in node.keys():
            path = f"{prefix}{key}"
            yield path
            try:
                child = node._get_node(key)
            except Exception:  # an interpolation that cannot resolve here: the key still counts
                continue
            yield from _flatten(child, f"{path}.")


def _group_choices(overrides: Sequence[str]) -> list[str]:
    """The config-group choices among ``overrides`` (``data=files``), sweeps left out."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    groups = set(config_groups())
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except Exception:
        return []
    return [
        o.input_line
        for o in parsed
        if o.key_or_group in groups and not o.is_sweep_override() and not o.is_delete()
    ]


def known_keys(config_name: str, overrides: Sequence[str] = ()) -> list[str]:
    """Every dotted key of the command's config with the group choices of ``overrides``."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    choices = _group_choices(overrides)
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(_config_dir()), version_base="1.3"):
        try:
            cfg = compose(config_name, choices)
        except Exception:  # a bad group choice: the defaults still give useful suggestions
            cfg = compose(config_name)
    return sorted(set(_flatten(cfg)))


def _group_with_key(key: str) -> str | None:
    """``data=files`` when ``key`` is ``data.micrographs`` and only configs/data/files.yaml has it."""
    import yaml

    group, _, rest = key.partition(".")
    folder = _config_dir() / group
    if not rest or not folder.is_dir():
        return None
    for option in sorted(folder.glob("*.yaml")):
        if option.name.startswith("_"):
            continue
        try:
            node = yaml.safe_load(option.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError):
            continue
        for part in rest.split("."):
            if not isinstance(node, dict) or part not in node:
                break
            node = node[part]
        else:
            return f"{group}={option.stem}"
    return None


def explain_unknown_key(config_name: str, key: str, overrides: Sequence[str] = ()) -> str:
    """The problem with ``key`` in one clause: the group that has it, or the closest known key."""
    group = _group_with_key(key)
    if group is not None:
        return f"unknown with the chosen {key.split('.')[0]} config; {key} needs {group}"
    try:
        keys = known_keys(config_name, overrides)
    except Exception:  # the suggestion is a courtesy: never let it hide the real error
        keys = []
    close = difflib.get_close_matches(key, keys, n=1, cutoff=0.6)
    if not close and "." not in key:  # model= for model_path=: a known key that starts with it
        close = [k for k in keys if "." not in k and k.startswith(f"{key}_")][:1]
    hint = f" (did you mean {close[0]}=?)" if close else ""
    return f"not a setting of tzl-{config_name}{hint}; tzl-{config_name} --help lists the main keys"


_KEY_PATTERNS = (
    re.compile(r"Could not override '([^']+)'"),
    re.compile(r"Could not append to config\. An item is already at '([^']+)'"),
    re.compile(r"Could not delete from config\. '([^']+)' does not exist"),
    re.compile(r"full_key: (\S+)"),
    re.compile(r"Key '([^']+)' is not in struct"),
)


def composition_error(
    config_name: str, err: BaseException, overrides: Sequence[str] = ()
) -> ConfigError | None:
    """A one-line ConfigError for Hydra's composition error ``err``; None if it is another kind."""
    from hydra.errors import (
        ConfigCompositionException,
        MissingConfigException,
        OverrideParseException,
    )

    if isinstance(err, OverrideParseException):
        first = str(err).strip().splitlines()[0] if str(err).strip() else "cannot parse"
        return ConfigError("command line", f"not a valid key=value override: {first}")
    if isinstance(err, MissingConfigException):
        message = " ".join(str(err).split())
        return ConfigError("command line", message.split(". Available options")[0])
    if not isinstance(err, ConfigCompositionException):
        return None
    text = f"{err}\n{err.__cause__ or ''}"
    for pattern in _KEY_PATTERNS:
        match = pattern.search(text)
        if match:
            key = match.group(1)
            if "already at" in pattern.pattern:
                return ConfigError(key, f"already exists: set it with {key}=..., not +{key}=...")
            return ConfigError(key, explain_unknown_key(config_name, key, overrides))
    first = " ".join(str(err).split())
    return ConfigError("command line", first)


def check_added_keys(config_name: str, overrides: Sequence[str]) -> None:
    """Refuse ``+key=value`` for a top-level key the command does not have (``+foo=1``).

    Hydra's struct mode refuses unknown keys, but ``+`` adds them silently: the user believes a
    setting is used that nothing reads. ``+`` below a known key (``+callbacks.x._target_=...``,
    ``++trainer.limit_val_batches=0``) and config groups (``+experiment=...``) stay allowed.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    adds = [
        o
        for o in OverridesParser.create().parse_overrides(list(overrides))
        if (o.is_add() or o.is_force_add()) and not o.key_or_group.startswith("hydra")
    ]
    if not adds:
        return
    known = {k.split(".")[0] for k in known_keys(config_name, overrides)} | set(config_groups())
    for override in adds:
        top = override.key_or_group.split(".")[0].split("@")[0].lstrip("/")
        if top not in known:
            raise ConfigError(
                override.key_or_group,
                explain_unknown_key(config_name, override.key_or_group, overrides),
            )
