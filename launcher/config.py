"""Configuration loading: YAML profile, ``.env`` file, environment overrides, validation, hash.

This module owns turning files and environment variables into one validated ``EngineConfig``
(``domain.config``), and the two views of it the rest of the engine shows: ``config_sha``
(logged at start, in ``/status`` and a metric) and ``redacted_config`` (dumps and ``/status``).

Precedence, lowest first: model defaults, the YAML profile, the ``.env`` file, the real
environment. Only the variables in ``ENV_OVERRIDES`` are read; their names are the SOLAT
runbook's. Any failure raises ``ConfigError`` with one line per problem, each naming the key
(dotted path) and the rule, so the launcher can print it to the operator and exit.

``data_dir`` (``VIGIL_DATA_DIR``) is the folder for the engine's data files, the default SQLite
database above all. The database is chosen, first match wins: ``DATABASE_URL`` in the
environment (or ``.env``); ``database_url`` in the YAML profile; else
``sqlite:///<data_dir>/vigil.db``. So ``VIGIL_DATA_DIR`` moves the database only while no URL
is given explicitly; an explicit URL is never rewritten.

Relative paths in the config (``data_dir``, ``logs_dir``, a ``sqlite:///relative.db``
``database_url``) are NOT resolved here: they stay relative to the process working
directory, as the operator typed them. Only the default profile location is anchored to the
repository root.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import types
import typing
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml
from dotenv import dotenv_values
from pydantic import BaseModel, SecretStr, ValidationError
from pydantic_core import to_jsonable_python

from domain.config import EngineConfig

__all__ = [
    "CONFIG_PATH_ENV",
    "DEFAULT_CONFIG_PATH",
    "DEFAULT_DATABASE_FILE",
    "ENV_OVERRIDES",
    "REPO_ROOT",
    "ConfigError",
    "config_sha",
    "load_config",
    "redacted_config",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
"""The repository root: the parent of ``launcher/``."""

DEFAULT_CONFIG_PATH = REPO_ROOT / "configs" / "paper.yaml"
"""The profile used when neither ``path`` nor ``VIGIL_CONFIG`` names one."""

CONFIG_PATH_ENV = "VIGIL_CONFIG"
"""Environment variable naming the profile to load."""

DEFAULT_DATABASE_FILE = "vigil.db"
"""The SQLite file, inside ``data_dir``, used when no ``database_url`` is given."""

ENV_OVERRIDES: Mapping[str, tuple[str, ...]] = types.MappingProxyType(
    {
        # SOLAT runbook: LIVE gate
        "LIVE_TRADING_ENABLED": ("live", "live_trading_enabled"),
        "LIVE_ENABLE_TOKEN": ("live", "live_enable_token"),
        "LIVE_ACCOUNT_ID": ("live", "live_account_id"),
        "LIVE_MAX_ORDER_SIZE": ("live", "live_max_order_size"),
        "LIVE_CONFIRMATION_TTL_S": ("live", "live_confirmation_ttl_s"),
        "LIVE_PRELIVE_MAX_AGE_S": ("live", "live_prelive_max_age_s"),
        # SOLAT runbook: risk limits
        "MAX_DAILY_LOSS_PCT": ("risk", "max_daily_loss_pct"),
        "MAX_CONCURRENT_POSITIONS": ("risk", "max_concurrent_positions"),
        "PER_SYMBOL_EXPOSURE_CAP": ("risk", "per_symbol_exposure_cap_rupees"),
        "MAX_TRADES_PER_HOUR": ("risk", "max_trades_per_hour"),
        # SOLAT runbook: kill switch
        "CLOSE_ON_KILL_SWITCH": ("close_on_kill_switch",),
        # Deployment
        "DATABASE_URL": ("database_url",),
        "VIGIL_HTTP_HOST": ("http", "host"),
        "VIGIL_HTTP_PORT": ("http", "port"),
        "VIGIL_ADMIN_TOKEN": ("http", "token"),
        "VIGIL_INSTANCE_ID": ("instance_id",),
        "VIGIL_LOGS_DIR": ("logs_dir",),
        "VIGIL_DATA_DIR": ("data_dir",),
        "VIGIL_LOG_LEVEL": ("log_level",),
    }
)
"""Environment variable -> key path in ``EngineConfig``. The only variables that override.

An empty value (``LIVE_ACCOUNT_ID=`` in a ``.env``) counts as unset and overrides nothing.
"""

_REDACTED = "***"
_MAX_SHOWN_INPUT = 80
# user:password@ in a database URL; the password is a secret even though the field is a str
_URL_PASSWORD = re.compile(r"(?P<head>://[^/:@]*:)[^@/]*(?P<tail>@)")


class ConfigError(Exception):
    """The configuration cannot be used. ``str()`` is ready to print to an operator.

    Attributes:
        source: where the configuration came from (the YAML path).
        problems: one line per problem, each starting with the key path.
    """

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = tuple(problems)
        noun = "problem" if len(problems) == 1 else "problems"
        lines = "\n".join(f"  {problem}" for problem in problems)
        super().__init__(f"invalid configuration {source} ({len(problems)} {noun}):\n{lines}")


# ---------------------------------------------------------------------------------------------
# LOADING
# ---------------------------------------------------------------------------------------------


def load_config(
    path: str | Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    dotenv_path: str | Path | None = ".env",
) -> EngineConfig:
    """Load a YAML profile, apply ``.env`` and environment overrides, and validate.

    Args:
        path: the YAML profile. When None: ``VIGIL_CONFIG`` from the environment (or the
            ``.env`` file), else ``configs/paper.yaml`` under the repository root. A relative
            path is relative to the working directory.
        environ: the environment to read; defaults to ``os.environ``. It wins over ``.env``.
        dotenv_path: the ``.env`` file, read with python-dotenv; a missing file is fine.
            Relative to the working directory. None skips it.

    Returns:
        The validated, frozen configuration.

    Raises:
        ConfigError: a missing or unreadable file, bad YAML (with line and column), a top
            level that is not a mapping, or validation errors (all of them, one per line,
            naming the key path, the rule and the offending value; an override names its
            environment variable too; secret values are never echoed).
    """
    env = _merged_environment(environ, dotenv_path)
    source = Path(path) if path is not None else _default_path(env)
    document = _read_yaml(source)
    overridden = _apply_overrides(document, env)
    _place_default_database(document)
    try:
        return EngineConfig.model_validate(document)
    except ValidationError as error:
        raise ConfigError(str(source), _describe(error, overridden)) from None


def _merged_environment(
    environ: Mapping[str, str] | None, dotenv_path: str | Path | None
) -> dict[str, str]:
    merged: dict[str, str] = {}
    if dotenv_path is not None:
        merged.update(
            {key: value for key, value in dotenv_values(dotenv_path).items() if value is not None}
        )
    merged.update(os.environ if environ is None else environ)
    return merged


def _default_path(env: Mapping[str, str]) -> Path:
    named = env.get(CONFIG_PATH_ENV, "")
    return Path(named) if named else DEFAULT_CONFIG_PATH


def _read_yaml(source: Path) -> dict[str, Any]:
    try:
        text = source.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            str(source), [f"(file): not found (working directory {Path.cwd()})"]
        ) from None
    except OSError as error:
        raise ConfigError(str(source), [f"(file): cannot be read ({error.strerror})"]) from None
    except UnicodeDecodeError as error:
        raise ConfigError(
            str(source), [f"(file): not UTF-8 text (byte offset {error.start})"]
        ) from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(str(source), [_describe_yaml_error(error)]) from None
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise ConfigError(
            str(source),
            [f"(root): must be a mapping of keys to values (was {type(document).__name__})"],
        )
    return document


def _describe_yaml_error(error: yaml.YAMLError) -> str:
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    problem = getattr(error, "problem", None) or str(error)
    if mark is None:
        return f"(yaml): {problem}"
    # PyYAML marks are 0-based; editors count from 1
    return f"(yaml): line {mark.line + 1}, column {mark.column + 1}: {problem}"


def _apply_overrides(
    document: dict[str, Any], env: Mapping[str, str]
) -> dict[tuple[str, ...], str]:
    # returns key path -> variable name, so that a validation error can name its variable
    overridden: dict[tuple[str, ...], str] = {}
    for variable, key_path in ENV_OVERRIDES.items():
        value = env.get(variable)
        if not value:
            continue
        section = _section(document, key_path[:-1])
        if section is None:
            continue  # the YAML has a non-mapping there; validation reports that key
        section[key_path[-1]] = value
        overridden[key_path] = variable
    return overridden


def _place_default_database(document: dict[str, Any]) -> None:
    # An explicit URL (YAML or DATABASE_URL, already applied) is used as given; otherwise the
    # SQLite file lives in data_dir, so VIGIL_DATA_DIR moves it.
    if document.get("database_url"):
        return
    data_dir = document.get("data_dir") or EngineConfig.model_fields["data_dir"].default
    if not isinstance(data_dir, str):
        return  # validation names the bad data_dir
    document["database_url"] = f"sqlite:///{(Path(data_dir) / DEFAULT_DATABASE_FILE).as_posix()}"


def _section(document: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any] | None:
    section = document
    for key in keys:
        child = section.get(key)
        if child is None:
            child = section[key] = {}
        if not isinstance(child, dict):
            return None
        section = child
    return section


# ---------------------------------------------------------------------------------------------
# ERROR MESSAGES
# ---------------------------------------------------------------------------------------------


def _describe(error: ValidationError, overridden: Mapping[tuple[str, ...], str]) -> list[str]:
    secret_paths = _secret_paths(EngineConfig)
    details = error.errors()
    locations = [tuple(detail["loc"]) for detail in details]
    lines = []
    for detail, location in zip(details, locations, strict=True):
        if detail["type"] == "too_short" and any(
            len(other) > len(location) and other[: len(location)] == location for other in locations
        ):
            continue  # pydantic drops invalid items, then counts; the items' errors say it all
        key = _dotted(location) or "(root)"
        if detail["type"] == "extra_forbidden":
            message = "unknown key (extra keys are not permitted)"
        else:
            message = detail["msg"].removeprefix("Value error, ")
        variable = _overriding_variable(location, overridden)
        origin = f" (from environment variable {variable})" if variable else ""
        shown = _shown_input(detail, is_secret=_is_secret_path(location, secret_paths))
        lines.append(f"{key}{origin}: {message}{shown}")
    return lines


def _overriding_variable(
    location: tuple[int | str, ...], overridden: Mapping[tuple[str, ...], str]
) -> str | None:
    for key_path, variable in overridden.items():
        if location[: len(key_path)] == key_path:
            return variable
    return None


def _dotted(location: tuple[int | str, ...]) -> str:
    text = ""
    for part in location:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text


def _shown_input(detail: Mapping[str, Any], *, is_secret: bool) -> str:
    # "missing" carries the parent mapping as its input: not the value of the key
    if detail["type"] == "missing" or "input" not in detail:
        return ""
    if is_secret:
        return f" (was {_REDACTED})"
    value = detail["input"]
    if isinstance(value, dict | list):
        # a whole section is only worth naming when its type is what is wrong
        if not detail["type"].endswith("_type"):
            return ""
        return " (was a mapping)" if isinstance(value, dict) else " (was a list)"
    shown = repr(value)
    if len(shown) > _MAX_SHOWN_INPUT:
        shown = shown[: _MAX_SHOWN_INPUT - 3] + "..."
    return f" (was {shown})"


def _secret_paths(model: type[BaseModel]) -> set[tuple[str, ...]]:
    paths: set[tuple[str, ...]] = set()
    for name, field in model.model_fields.items():
        if _annotation_has_secret(field.annotation):
            paths.add((name,))
        for nested in _nested_models(field.annotation):
            paths.update((name, *sub) for sub in _secret_paths(nested))
    return paths


def _is_secret_path(location: tuple[int | str, ...], secret_paths: set[tuple[str, ...]]) -> bool:
    named = tuple(part for part in location if isinstance(part, str))
    return any(named[: len(path)] == path for path in secret_paths)


def _annotation_has_secret(annotation: Any) -> bool:
    if annotation is SecretStr:
        return True
    return any(_annotation_has_secret(argument) for argument in typing.get_args(annotation))


def _nested_models(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for argument in typing.get_args(annotation) for model in _nested_models(argument)]


# ---------------------------------------------------------------------------------------------
# VIEWS: HASH AND REDACTED DUMP
# ---------------------------------------------------------------------------------------------


def config_sha(config: EngineConfig) -> str:
    """Return the SHA-256 (hex, 64 characters) of the effective config without its secrets.

    Secret fields (every ``SecretStr`` field, set or not) are left out entirely, and a
    password in ``database_url`` is replaced by a constant, so rotating a token or password
    does not change the hash. The JSON is canonical: sorted keys, no whitespace, decimals
    normalised (``2.0`` and ``2`` hash alike). Show the first 12 characters where space is
    short.
    """
    plain = _plain(config, secrets="drop")
    canonical = json.dumps(plain, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def redacted_config(config: EngineConfig) -> dict[str, Any]:
    """Return the config as JSON-ready plain data for dumps and ``/status``.

    A secret field shows ``"***"`` when set and None when not; a password in
    ``database_url`` shows as ``***``. Decimals are strings, enums their values, tuples lists.
    """
    plain = _plain(config, secrets="mask")
    assert isinstance(plain, dict)
    return plain


def _plain(value: Any, *, secrets: typing.Literal["drop", "mask"]) -> Any:
    if isinstance(value, BaseModel):
        out: dict[str, Any] = {}
        for name, field in type(value).model_fields.items():
            item = getattr(value, name)
            if _annotation_has_secret(field.annotation):
                if secrets == "mask":
                    out[name] = None if item is None else _REDACTED
                continue
            if name == "database_url" and isinstance(item, str):
                item = _URL_PASSWORD.sub(rf"\g<head>{_REDACTED}\g<tail>", item)
            out[name] = _plain(item, secrets=secrets)
        return out
    if isinstance(value, tuple | list):
        return [_plain(item, secrets=secrets) for item in value]
    if isinstance(value, dict):
        return {str(key): _plain(item, secrets=secrets) for key, item in value.items()}
    if secrets == "drop" and isinstance(value, Decimal):
        # "2.0" and "2" are the same setting and must hash alike
        return format(value.normalize(), "f")
    return to_jsonable_python(value)
