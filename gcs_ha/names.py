"""Names an operator gives: node ids and cluster names.

One rule everywhere (the CLI, the admin service, the members table): 1-64 characters,
letters, digits, '.', '_' or '-', starting with a letter or digit. Names end up in file
names, log lines, systemd unit instances and shell commands, so nothing else is allowed.
"""

from __future__ import annotations

import re
from typing import Final

from gcs_ha.errors import ConfigError

_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_name(kind: str, value: str) -> str:
    """`value` itself when it is a valid name; ConfigError naming `kind` otherwise."""
    if not _NAME.fullmatch(value):
        raise ConfigError(f"bad {kind} {value!r}: use 1-64 letters, digits, '.', '_' or '-'")
    return value
