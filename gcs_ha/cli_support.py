"""What every gcs-ha command shares: errors as one-line messages and exit codes, and
`--json` (one JSON object on stdout instead of the text; errors still on stderr)."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from gcs_ha.errors import ConfigError, GcsHaError

F = TypeVar("F", bound=Callable[..., Any])


class BadInput(click.ClickException):
    """A one-line error about the user's input (exit code 2, like click's usage errors)."""

    exit_code = 2


def friendly_errors(fn: F) -> F:
    """Turn gcs-ha errors into one-line messages and exit codes (no tracebacks)."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ConfigError as exc:
            raise BadInput(str(exc)) from None
        except GcsHaError as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper  # type: ignore[return-value]


secret_file_option = click.option(
    "--secret-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="File holding the cluster secret (else $GCS_HA_SECRET).",
)


json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON object (for scripts) instead."
)


def report(as_json: bool, doc: dict[str, Any], text: str) -> None:
    """A command's result on stdout: `doc` as one JSON object, or `text`."""
    click.echo(json.dumps(doc, indent=2) if as_json else text)
