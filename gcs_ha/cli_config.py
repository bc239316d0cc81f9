"""Every option of the operator's commands also from the environment and a config file.

`configure(cli)` runs once, on the finished command tree: each option reads GCS_HA_<NAME>
and each command gets `--config FILE` (TOML keyed by the long option names). Precedence,
value types and the options left out (NOT_CONFIGURED, COMMAND_LINE_ONLY, the secret):
docs/configuration.md.

Errors are BadInput ("Error: ..." on stderr, exit code 2), naming the file and the key:
a config file missing, unreadable or not TOML; a key that is no option; a value of the
wrong TOML type or that its option refuses.
"""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import click

from gcs_ha.cli_support import BadInput
from gcs_ha.errors import ConfigError
from gcs_ha.processes import withhold_from_replicas
from gcs_ha.raft_options import DurationType
from gcs_ha.storage_options import SizeType

ENV_PREFIX = "GCS_HA_"
CONFIG_ENV = "GCS_HA_CONFIG"
NOT_CONFIGURED = frozenset({"bench", "drill"})
COMMAND_LINE_ONLY = {
    ("leave", "node-id"): "the member to remove is named on the command line only",
    ("leave", "raft-address"): "the member to remove is named on the command line only",
    ("recover", "yes"): "recover is confirmed on the command line only",
}
REFUSED_KEYS = {
    "secret": "the secret is never a value in a config file: give the file that holds it "
    "as secret-file (mode 0600)",
    "config": "a config file cannot name another",
}


def long_name(option: click.Option) -> str:
    """The option's long name without dashes: "node-id" for --node-id."""
    return max((o for o in option.opts if o.startswith("--")), key=len)[2:]


def envvar_name(key: str) -> str:
    """GCS_HA_NODE_ID for "node-id"."""
    return ENV_PREFIX + key.upper().replace("-", "_")


@dataclass(frozen=True)
class ValueKind:
    """The TOML values an option takes."""

    types: tuple[type, ...]
    label: str
    multiple: bool = False

    def fits(self, value: Any) -> bool:
        if self.multiple:
            return isinstance(value, list) and all(self._fits_one(v) for v in value)
        return self._fits_one(value)

    def _fits_one(self, value: Any) -> bool:
        if isinstance(value, bool) and bool not in self.types:
            return False  # TOML's true is no integer
        return isinstance(value, self.types)

    def describe(self) -> str:
        if self.multiple:
            return f"a list of {self.label}s"
        return f"{'an' if self.label[0] in 'aeiou' else 'a'} {self.label}"


def value_kind(option: click.Option) -> ValueKind:
    kind = option.type
    if option.is_flag:
        one = ValueKind((bool,), "boolean (true or false)")
    elif isinstance(kind, click.types.IntParamType):
        one = ValueKind((int,), "integer")
    elif isinstance(kind, click.types.FloatParamType):
        one = ValueKind((int, float), "number")
    elif isinstance(kind, SizeType):
        one = ValueKind((str, int), 'size ("8GiB", "512MiB" or bytes)')
    elif isinstance(kind, DurationType):
        one = ValueKind((str,), 'duration ("300ms", "1.5s")')
    else:
        one = ValueKind((str,), "string")
    return ValueKind(one.types, one.label, multiple=option.multiple)


Settable = Mapping[str, click.Option]  # one command's options by long name


class ConfigKeys:
    """The keys a config file may hold: every settable option of every command."""

    def __init__(self, kinds: Mapping[str, ValueKind], cli_only: Mapping[str, str]) -> None:
        self._kinds = dict(kinds)
        self._cli_only = {k: why for k, why in cli_only.items() if k not in kinds}

    def check(self, doc: Mapping[str, Any], path: Path) -> None:
        """ConfigError for a key that is no option, or a value of the wrong type."""
        for key, value in doc.items():
            kind = self._kinds.get(key)
            if kind is None:
                raise ConfigError(f"config file {path}: {self._unknown(key)}")
            if not kind.fits(value):
                raise ConfigError(
                    f"config file {path}: {key} must be {kind.describe()}, not {value!r}"
                )

    def _unknown(self, key: str) -> str:
        why = REFUSED_KEYS.get(key) or self._cli_only.get(key)
        if why:
            return f"{key}: {why}"
        close = difflib.get_close_matches(key, self._kinds, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        return f"unknown key {key!r} (the keys are the long option names, e.g. node-id){hint}"


def read_config(path: Path) -> dict[str, Any]:
    """The TOML document in `path` (ConfigError naming it when it cannot be read)."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def configure(group: click.Group) -> None:
    """Give every command of `group` its environment variables and --config (see above)."""
    commands = list(_commands(group))
    kinds: dict[str, ValueKind] = {}
    cli_only: dict[str, str] = {}
    settable: dict[str, dict[str, click.Option]] = {}
    for path, command in commands:
        mine = settable[path] = {}
        for option in _visible_options(command):
            key = long_name(option)
            if (path, key) in COMMAND_LINE_ONLY:
                cli_only[key] = COMMAND_LINE_ONLY[path, key]
                continue
            kind = value_kind(option)
            if kinds.setdefault(key, kind) != kind:
                raise ValueError(f"option --{key} takes different values across commands")
            option.envvar = envvar_name(key)
            option.show_envvar = True
            mine[key] = option
    keys = ConfigKeys(kinds, cli_only)
    for path, command in commands:
        command.params.insert(0, _config_option(keys, settable[path]))
    withhold_from_replicas([CONFIG_ENV, *(envvar_name(key) for key in kinds)])


def _commands(group: click.Group, prefix: str = "") -> Iterator[tuple[str, click.Command]]:
    """(path, command) of every command under `group` but NOT_CONFIGURED: "snapshot save"."""
    for name, command in group.commands.items():
        if not prefix and name in NOT_CONFIGURED:
            continue
        path = f"{prefix} {name}".strip()
        if isinstance(command, click.Group):
            yield from _commands(command, path)
        else:
            yield path, command


def _visible_options(command: click.Command) -> Iterator[click.Option]:
    for param in command.params:
        if isinstance(param, click.Option) and param.expose_value and not param.hidden:
            yield param


def _config_option(keys: ConfigKeys, settable: Settable) -> click.Option:
    return click.Option(
        ["--config"],
        type=click.Path(dir_okay=False, path_type=Path),
        envvar=CONFIG_ENV,
        show_envvar=True,
        is_eager=True,
        expose_value=False,
        callback=partial(_load_config, keys, settable),
        help='TOML file of option values, keyed by long option name (node-id = "r0"). '
        "The command line, then the environment, win over it.",
    )


def _load_config(
    keys: ConfigKeys,
    settable: Settable,
    ctx: click.Context,
    _param: click.Parameter,
    path: Path | None,
) -> None:
    """--config's callback (eager: it runs before the other options are read): the file's
    values for this command's options become the command's default_map."""
    if path is None or ctx.resilient_parsing:
        return
    try:
        doc = read_config(path)
        keys.check(doc, path)
    except ConfigError as exc:
        raise BadInput(str(exc)) from None
    defaults: dict[str, Any] = {}
    for key, option in settable.items():
        if key in doc and option.name is not None:
            _check_value(ctx, option, doc[key], f"config file {path}: {key}")
            defaults[option.name] = doc[key]
    ctx.default_map = {**(ctx.default_map or {}), **defaults}


def _check_value(ctx: click.Context, option: click.Option, value: Any, where: str) -> None:
    """BadInput naming `where` when the option refuses the value (e.g. a log level)."""
    try:
        option.type_cast_value(ctx, value)
    except click.BadParameter as exc:
        raise BadInput(f"{where}: {exc.message}") from None
