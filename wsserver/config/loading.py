"""Loading a configuration: the TOML file, then the environment, then overrides, strictly typed.

Invariants:

- `load_config` is the only place that reads TOML, the environment or the CLI's
  values, in this order, each layer overriding the one before: the TOML file,
  `WSSERVER_<SECTION>_<KEY>` environment variables, then dotted `overrides`
  (the CLI flags).
- Types are strict: no value is coerced from one TOML type to another, except that
  an integer is accepted where a float is expected.
- A `Config` returned by `load_config` or `config_from_dict` has passed
  `validate_config`; one built by hand has not until you call it.
- Every failure is a `ConfigError` whose `key` is the dotted path of the offending
  key (`limits.send_queue`, `activation_codes[1].code`), the environment variable
  name for an unknown `WSSERVER_*` variable, or the file path when the file itself
  cannot be read or parsed.
"""

import os
import tomllib
import typing
from collections.abc import Callable, Iterator, Mapping
from importlib.resources import files
from typing import Any, Final

import attrs
import cattrs
from cattrs.errors import (
    AttributeValidationNote,
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
    IterableValidationNote,
)
from cattrs.gen import make_dict_structure_fn

from wsserver import shapes
from wsserver.config.sections import ApiKey, Config
from wsserver.config.validation import ConfigError, validate_config
from wsserver.shapes import ARRAY, OBJECT, ShapeError, structure_number

__all__ = [
    "CONFIG_PATH_ENV",
    "ENV_PREFIX",
    "config_from_dict",
    "config_to_dict",
    "default_config_text",
    "load_config",
]

ENV_PREFIX: Final = "WSSERVER_"
CONFIG_PATH_ENV: Final = "WSSERVER_CONFIG"
"""The environment variable holding the config file path (read by the CLI, not a key)."""


# --- strict structuring ---------------------------------------------------------------


_TOML_NAMES: Final = {
    "bool": "bool",
    "int": "int",
    "number": "float",
    "str": "str",
    "id": "int or str",
    "array": "array",
    "object": "table",
}
"""The TOML names of the shapes' scalar rules (`wsserver.shapes`), as users see them."""


def _type_name(value: object) -> str:
    """The TOML name of a Python value's type, as users see it in their file."""
    if isinstance(value, Mapping):
        return "table"
    if isinstance(value, list | tuple):
        return "array"
    return type(value).__name__


def _structure_float(value: object, type_: object) -> float:
    # the `number` rule (an integer is accepted where a float is expected), as a float
    return float(structure_number(value, type_))


def _is_homogeneous_tuple(t: Any) -> bool:
    args = typing.get_args(t)
    return typing.get_origin(t) is tuple and len(args) == 2 and args[1] is Ellipsis


def _make_converter() -> cattrs.Converter:
    """The converter of inbound values (`wsserver.shapes`: its scalar rules never
    coerce between types), copied to refuse unknown keys and report every fault."""
    converter = shapes.converter.copy(forbid_extra_keys=True, detailed_validation=True)
    converter.register_structure_hook(float, _structure_float)

    def tuple_hook(t: Any) -> Callable[[object, object], tuple[Any, ...]]:
        element_type = typing.get_args(t)[0]

        def structure(value: object, _: object) -> tuple[Any, ...]:
            # A str is iterable, so without this check "abc" would become ("a", "b", "c").
            if not isinstance(value, list | tuple):
                raise ShapeError("type", value, rule=ARRAY)
            items: list[Any] = []
            errors: list[Exception] = []
            for index, element in enumerate(value):
                try:
                    items.append(converter.structure(element, element_type))
                except Exception as exc:
                    note = IterableValidationNote(
                        f"Structuring {t!r} @ index {index}", index, element_type
                    )
                    exc.__notes__ = [*getattr(exc, "__notes__", []), note]
                    errors.append(exc)
            if errors:
                raise IterableValidationError(f"While structuring {t!r}", errors, t)
            return tuple(items)

        return structure

    converter.register_structure_hook_factory(_is_homogeneous_tuple, tuple_hook)

    def attrs_hook(cl: Any) -> Callable[[object, object], Any]:
        inner = make_dict_structure_fn(cl, converter)

        def structure(value: object, _: object) -> Any:
            if not isinstance(value, Mapping):
                raise ShapeError("type", value, rule=OBJECT)
            return inner(value, cl)

        return structure

    converter.register_structure_hook_factory(attrs.has, attrs_hook)

    def api_key(value: object, _: object) -> str | ApiKey:
        # `[[api.keys]]`: a table is a named key, anything else must be a string
        if isinstance(value, Mapping):
            return converter.structure(value, ApiKey)
        return converter.structure(value, str)

    converter.register_structure_hook_func(lambda t: t == str | ApiKey, api_key)
    return converter


_converter: Final = _make_converter()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ShapeError) and exc.rule is not None:
        return f"expected {_TOML_NAMES[exc.rule.name]}, got {_type_name(exc.value)}"
    if isinstance(exc, ShapeError):  # a float that is not finite
        return f"expected a finite float, got {exc.value!r}"
    if isinstance(exc, KeyError):
        return "required key missing"
    return f"invalid value ({exc})"


def _errors(exc: BaseException, path: str) -> Iterator[tuple[str, str]]:
    """Walk a cattrs error tree, yielding `(dotted key, message)` in field order."""
    if isinstance(exc, ClassValidationError | IterableValidationError):
        with_notes, without = exc.group_exceptions()
        for sub, note in with_notes:
            if isinstance(note, AttributeValidationNote):
                sub_path = f"{path}.{note.name}" if path else note.name
            else:
                sub_path = f"{path}[{note.index}]"
            yield from _errors(sub, sub_path)
        for sub in without:
            yield from _errors(sub, path)
    elif isinstance(exc, ForbiddenExtraKeysError):
        message = "unknown key" if path else "unknown section"
        for name in sorted(exc.extra_fields):
            yield (f"{path}.{name}" if path else name), message
    else:
        yield path, _describe(exc)


def config_from_dict(data: Mapping[str, object]) -> Config:
    """Structure and validate a parsed TOML document (nested dicts) into a `Config`.

    Raises `ConfigError` naming the first offending key.
    """
    return _structure(data, {})


def _structure(data: Mapping[str, object], origins: Mapping[str, str]) -> Config:
    try:
        config = _converter.structure(data, Config)
        validate_config(config)
    except ConfigError as exc:
        raise ConfigError(exc.key, _with_source(exc.message, exc.key, origins)) from None
    except Exception as exc:
        key, message = next(_errors(exc, ""), ("", f"invalid configuration ({exc})"))
        raise ConfigError(key, _with_source(message, key, origins)) from None
    return config


def _with_source(message: str, key: str, origins: Mapping[str, str]) -> str:
    """Append the environment variable that set `key` (or its parent), if one did."""
    for origin_key, source in origins.items():
        if key == origin_key or key.startswith((origin_key + ".", origin_key + "[")):
            return f"{message} (from {source})"
    return message


# --- layering: file, environment, overrides -------------------------------------------

_SECTIONS: Final[dict[str, type]] = {
    field.name: field.type
    for field in attrs.fields(Config)
    if isinstance(field.type, type) and attrs.has(field.type)
}
"""Config fields that are tables of keys, by name."""

_WHOLE_VALUES: Final = frozenset(attrs.fields_dict(Config)) - frozenset(_SECTIONS)
"""Config fields set as one value (activation_codes: an array of tables)."""


def _field_type(key: str) -> Any:
    """The declared type of a dotted key, or None when there is no such key."""
    parts = key.split(".")
    top = attrs.fields_dict(Config).get(parts[0])
    if top is None:
        return None
    if len(parts) == 1:
        return None if parts[0] in _SECTIONS else top.type
    if len(parts) == 2 and parts[0] in _SECTIONS:
        field = attrs.fields_dict(_SECTIONS[parts[0]]).get(parts[1])
        return None if field is None else field.type
    return None


def _env_key(name: str) -> str | None:
    """Map `WSSERVER_LIMITS_SEND_QUEUE` to `limits.send_queue`; None if it names no key."""
    rest = name[len(ENV_PREFIX) :].lower()
    if rest in _WHOLE_VALUES:
        return rest
    for section, cls in _SECTIONS.items():
        if rest.startswith(section + "_"):
            key = rest[len(section) + 1 :]
            if key in attrs.fields_dict(cls):
                return f"{section}.{key}"
    return None


def _parse_env_value(raw: str, field_type: Any) -> object:
    """Read an environment value as a TOML value, else as the raw string.

    For a str key the raw string also wins when it parses as another TOML type, so
    `WSSERVER_AUTH_JWT_SECRET=123456` is the string "123456", not an error.
    """
    try:
        value = tomllib.loads("v = " + raw)["v"]
    except tomllib.TOMLDecodeError:
        return raw
    if field_type is str and not isinstance(value, str):
        return raw
    return value


def _set(data: dict[str, Any], key: str, value: object) -> None:
    parts = key.split(".")
    if len(parts) == 2:
        section = data.setdefault(parts[0], {})
        if not isinstance(section, dict):
            raise ConfigError(parts[0], f"expected table, got {_type_name(section)}")
        section[parts[1]] = value
    else:
        data[parts[0]] = value


def _read_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse a UTF-8 TOML file; a leading BOM (Windows Notepad) is tolerated."""
    try:
        with open(path, "rb") as file:
            raw = file.read()
    except OSError as exc:
        raise ConfigError(
            os.fspath(path), f"cannot read config file: {exc.strerror or exc}"
        ) from None
    try:
        return tomllib.loads(raw.removeprefix(b"\xef\xbb\xbf").decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(os.fspath(path), f"invalid TOML: {exc}") from None


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, object] | None = None,
) -> Config:
    """Load the TOML file at `path` (None = embedded defaults), then apply the
    `WSSERVER_<SECTION>_<KEY>` variables of `env` (None = `os.environ`), then the
    dotted `overrides` (`{"server.port": 0}`), then validate.

    Raises `ConfigError` for an unreadable file, an unknown key, section or
    `WSSERVER_*` variable, a value of the wrong type, or a failed validation.
    """
    data = {} if path is None else _read_file(path)
    origins: dict[str, str] = {}
    for name, raw in sorted((os.environ if env is None else env).items()):
        if not name.startswith(ENV_PREFIX) or name == CONFIG_PATH_ENV:
            continue
        key = _env_key(name)
        if key is None:
            raise ConfigError(name, "unknown environment variable (no such config key)")
        _set(data, key, _parse_env_value(raw, _field_type(key)))
        origins[key] = name
    for key, value in (overrides or {}).items():
        if _field_type(key) is None:
            raise ConfigError(key, "unknown key")
        _set(data, key, value)
        origins.pop(key, None)
    return _structure(data, origins)


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """The config as plain nested dicts and lists (TOML/JSON shaped); `config_from_dict` inverts it."""

    def lists(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: lists(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [lists(v) for v in value]
        return value

    result: dict[str, Any] = lists(_converter.unstructure(cfg))
    return result


def default_config_text() -> str:
    """The text of the packaged, documented default `wsserver.toml`."""
    return files("wsserver").joinpath("wsserver.toml").read_text(encoding="utf-8")
