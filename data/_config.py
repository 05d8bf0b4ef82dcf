"""One base for every component's typed configuration (issue #14 item 4).

Every component config (stage 1, the world, the keyword index, the reranker task, the
federated platform, the server, the report) is a pydantic model that inherits
:class:`ComponentConfig`; its sections inherit :class:`ConfigSection`. Both are frozen,
reject unknown keys and take each field's docstring as its description. The base alone
reads files, the environment and ``section.key=value`` overrides, explains invalid values
and writes TOML/JSON, so that a component declares fields and nothing else.

Precedence, lowest to highest: the field defaults, a ``.toml``/``.json`` file,
``<env_prefix><FIELD>`` environment variables (``<env_prefix>CONFIG`` names the file when
none is given; ``<env_prefix><SECTION>__<KEY>`` reaches into a section), ``--set``
strings, keyword values (CLI flags). Every problem raises the component's
:attr:`ComponentConfig.config_error` (:class:`data.ConfigError` or a subclass), naming the
file, variable or key, the value and what was expected.

This module lives in ``data``, the lowest package, so that every other package can
import it without a circle in the import graph.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import NoneType, UnionType
from typing import Any, ClassVar, Self, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import PydanticUndefined

from data._errors import ConfigError

__all__ = ["ComponentConfig", "ConfigSection"]

_FORMATS = (".toml", ".json")


class ConfigSection(BaseModel):
    """A section of a component config: frozen, unknown keys rejected, field docstrings."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class ComponentConfig(ConfigSection):
    """The base of every component config: loading, overrides, errors, TOML/JSON.

    Subclasses declare fields (scalars or :class:`ConfigSection` sections) and may set:

    - ``config_name``: how messages name the config (``"stage-1 config"``);
    - ``config_error``: the exception raised (:class:`data.ConfigError` or a subclass);
    - ``env_prefix``: the prefix of its environment variables (None: no environment);
    - ``env_reserved``: names after that prefix that are not fields (other settings of
      the component's process, such as ``BOARD``);
    - ``settings_prefix``: a leading ``<prefix>.`` that ``--set`` keys may carry and that
      is dropped (``world.n_users=10`` for the world's flat config).
    """

    config_name: ClassVar[str] = "config"
    config_error: ClassVar[type[Exception]] = ConfigError
    env_prefix: ClassVar[str | None] = None
    env_reserved: ClassVar[tuple[str, ...]] = ()
    settings_prefix: ClassVar[str | None] = None

    # -- construction -----------------------------------------------------------------

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], source: str = "<config>") -> Self:
        """Validate a plain mapping.

        Raises
        ------
        ConfigError
            (``config_error``) naming ``source`` and every invalid field with its value.
        """
        try:
            return cls.model_validate(dict(raw))
        except ValidationError as exc:
            raise cls.config_error(_explain(cls, exc, source)) from None

    @classmethod
    def from_json(cls, text: str, source: str = "<json>") -> Self:
        """Parse and validate JSON text (an object)."""
        return cls.from_dict(cls._parse(text, ".json", source), source)

    @classmethod
    def from_toml(cls, text: str, source: str = "<toml>") -> Self:
        """Parse and validate TOML text."""
        return cls.from_dict(cls._parse(text, ".toml", source), source)

    @classmethod
    def read_file(cls, path: str | Path) -> dict[str, Any]:
        """The raw mapping of a ``.toml`` or ``.json`` file (not validated yet).

        Raises
        ------
        ConfigError
            If the file is missing, unreadable, of another format or not a mapping.
        """
        path = Path(path)
        if path.suffix not in _FORMATS:
            raise cls.config_error(f"{path}: unknown config format {path.suffix!r}; "
                                   "expected .toml or .json")
        if not path.is_file():
            raise cls.config_error(f"{path}: config file not found")
        try:
            text = path.read_text()
        except OSError as exc:
            raise cls.config_error(f"{path}: cannot read {cls.config_name} ({exc})") from None
        return cls._parse(text, path.suffix, str(path))

    @classmethod
    def load(cls, path: str | Path | None = None, *, env_prefix: str | None = None,
             overrides: Iterable[str] = (), environ: Mapping[str, str] | None = None,
             **values: Any) -> Self:
        """Defaults, then ``path``, then the environment, then ``overrides``, then ``values``.

        Parameters
        ----------
        path : str or Path, optional
            A ``.toml`` or ``.json`` file; None: ``<env_prefix>CONFIG`` if set, else none.
        env_prefix : str, optional
            Prefix of the environment variables read (default: the class's
            ``env_prefix``; neither: the environment is not read).
        overrides : iterable of str
            ``section.key=value`` strings as typed after ``--set``; values are parsed as
            TOML (``3``, ``0.5``, ``true``, ``["a", "b"]``), else kept as text, and kept
            as text for text fields (``reranker_version=123``).
        environ : mapping, optional
            The environment (default ``os.environ``).
        **values
            Dotted keys (``privacy.noise_multiplier``) or top-level fields; None values
            are skipped (unset CLI flags).

        Raises
        ------
        ConfigError
            (``config_error``) naming the file, variable or key and the problem.
        """
        prefix = env_prefix if env_prefix is not None else cls.env_prefix
        env = os.environ if environ is None else environ
        if path is None and prefix is not None:
            path = env.get(f"{prefix}CONFIG") or None
        raw: dict[str, Any] = cls.read_file(path) if path is not None else {}
        if prefix is not None:
            cls._apply_environment(raw, prefix, env)
        cls.apply_settings(raw, overrides)
        for dotted, value in values.items():
            if value is not None:
                parts = dotted.split(".")
                cls._check_key(parts, repr(dotted))
                _assign(raw, parts, value)
        return cls.from_dict(raw, str(path) if path is not None else "<config>")

    def with_overrides(self, overrides: Iterable[str]) -> Self:
        """A copy with ``section.key=value`` overrides applied (see :meth:`load`)."""
        raw = self.model_dump()
        type(self).apply_settings(raw, overrides)
        return type(self).from_dict(raw, "overrides")

    @classmethod
    def apply_settings(cls, raw: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
        """Apply ``section.key=value`` strings to a raw mapping in place and return it.

        Raises
        ------
        ConfigError
            If an item is not ``key=value`` or names no field (the message lists the
            known keys).
        """
        for item in overrides:
            key, sep, text = item.partition("=")
            parts = key.strip().split(".")
            if cls.settings_prefix is not None and len(parts) > 1 and (
                    parts[0] == cls.settings_prefix):
                parts = parts[1:]
            if not sep or not all(parts):
                raise cls.config_error(f"override {item!r} is not of the form "
                                       "section.key=value")
            field = cls._check_key(parts, f"override {item!r}")
            _assign(raw, parts, _parse_text(text.strip(), _is_text(field)))
        return raw

    # -- serialisation ----------------------------------------------------------------

    def to_json(self) -> str:
        """Pretty JSON that :meth:`from_json` reads back to an equal config."""
        return json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"

    def to_toml(self) -> str:
        """TOML that :meth:`from_toml` reads back to an equal config.

        Raises
        ------
        ConfigError
            If a field is None where its default is not (TOML has no null; use JSON).
        """
        raw = self.model_dump(mode="json")
        _drop_default_nulls(type(self), raw, "")
        return _dump_toml(raw)

    def save(self, path: str | Path) -> Path:
        """Write ``.toml`` or ``.json`` according to the suffix; returns ``path``."""
        path = Path(path)
        if path.suffix not in _FORMATS:
            raise self.config_error(f"{path}: unknown config format {path.suffix!r}; "
                                    "expected .toml or .json")
        path.write_text(self.to_toml() if path.suffix == ".toml" else self.to_json())
        return path

    @classmethod
    def known_keys(cls) -> list[str]:
        """Every dotted key a ``--set`` override may name, in declaration order."""
        return _dotted_keys(cls, "")

    # -- internals --------------------------------------------------------------------

    @classmethod
    def _parse(cls, text: str, suffix: str, source: str) -> dict[str, Any]:
        if suffix == ".toml":
            try:
                return tomllib.loads(text)
            except tomllib.TOMLDecodeError as exc:
                raise cls.config_error(f"{source}: not valid TOML ({exc})") from None
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise cls.config_error(f"{source}: not valid JSON ({exc})") from None
        if not isinstance(raw, dict):
            raise cls.config_error(f"{source}: expected a JSON object, got "
                                   f"{type(raw).__name__}")
        return raw

    @classmethod
    def _apply_environment(cls, raw: dict[str, Any], prefix: str,
                           env: Mapping[str, str]) -> None:
        for name, text in env.items():
            rest = name.removeprefix(prefix)
            if not name.startswith(prefix) or rest == "CONFIG" or rest in cls.env_reserved:
                continue
            parts = rest.lower().split("__")
            field = cls._check_key(parts, name)
            if _is_text(field):
                value: Any = text  # version names may look like numbers
            else:
                try:
                    value = json.loads(text)
                except ValueError:
                    value = text  # a bare string such as a path
            _assign(raw, parts, value)

    @classmethod
    def _check_key(cls, parts: list[str], where: str) -> Any:
        """The annotation of the field ``parts`` names; raises naming the unknown part."""
        model: type[BaseModel] | None = cls
        annotation: Any = None
        for depth, part in enumerate(parts):
            if model is None:
                if _is_mapping(annotation):
                    return Any  # a key inside a mapping field (event_weights.purchase)
                raise cls.config_error(f"{where}: {'.'.join(parts[:depth])!r} is not a "
                                       f"section of the {cls.config_name}")
            if part not in model.model_fields:
                if depth == len(parts) - 1 and model.model_config.get("extra") == "allow":
                    return Any  # a section that validates its own further keys
                if depth < len(parts) - 1 and model is cls:
                    raise cls.config_error(f"{where}: unknown config section {part!r}; "
                                           f"known keys: {', '.join(cls.known_keys())}")
                raise cls.config_error(
                    f"{where}: unknown key {'.'.join(parts)!r} of the {cls.config_name} "
                    f"(extra keys are rejected); known keys: {', '.join(cls.known_keys())}")
            annotation = model.model_fields[part].annotation
            model = _section(annotation)
        return annotation


def _section(annotation: Any) -> type[BaseModel] | None:
    return annotation if isinstance(annotation, type) and issubclass(
        annotation, BaseModel) else None


def _is_mapping(annotation: Any) -> bool:
    return annotation is dict or get_origin(annotation) is dict


def _is_text(annotation: Any) -> bool:
    """Whether a field takes only text (besides None): its values are never parsed."""
    if annotation is str:
        return True
    if get_origin(annotation) in (Union, UnionType):
        return set(get_args(annotation)) == {str, NoneType}
    return False


def _parse_text(text: str, as_text: bool) -> Any:
    if as_text and not (len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'"):
        return text
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _assign(raw: dict[str, Any], parts: list[str], value: Any) -> None:
    node = raw
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[parts[-1]] = value


def _dotted_keys(model: type[BaseModel], prefix: str) -> list[str]:
    keys: list[str] = []
    for name, field in model.model_fields.items():
        section = _section(field.annotation)
        if section is not None:
            keys.extend(_dotted_keys(section, f"{prefix}{name}."))
        else:
            keys.append(f"{prefix}{name}")
    return keys


def _explain(cls: type[ComponentConfig], exc: ValidationError, source: str) -> str:
    problems = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "config"
        if err["type"] == "extra_forbidden":
            problems.append(f"{where}: unknown key (extra keys are rejected; known keys: "
                            f"{', '.join(cls.known_keys())})")
            continue
        msg = err["msg"].removeprefix("Value error, ")
        shown = "" if err["type"] == "missing" else f" (got {err.get('input')!r})"
        problems.append(f"{where}: {msg}{shown}")
    return f"{source}: invalid {cls.config_name}: " + "; ".join(problems)


def _drop_default_nulls(model: type[BaseModel], raw: dict[str, Any], prefix: str) -> None:
    # TOML has no null: a None whose default is None is simply left out; any other is an error.
    for name, field in model.model_fields.items():
        value = raw.get(name)
        section = _section(field.annotation)
        if section is not None and isinstance(value, dict):
            _drop_default_nulls(section, value, f"{prefix}{name}.")
        elif value is None and name in raw:
            default = (field.default_factory() if field.default_factory is not None  # type: ignore[call-arg]
                       else field.default)
            if default is not None and default is not PydanticUndefined:
                raise ConfigError(f"{prefix}{name} is None (its default is {default!r}) and "
                                  "TOML has no null; write this config as JSON")
            del raw[name]


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        body = ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items()
                         if v is not None)
        return "{ " + body + " }" if body else "{}"
    raise ConfigError(f"cannot write {type(value).__name__} as TOML")


def _dump_toml(raw: Mapping[str, Any]) -> str:
    # Top-level scalars first, then one table per section; deeper mappings are inline tables.
    lines = [f"{k} = {_toml_value(v)}" for k, v in raw.items() if not isinstance(v, dict)]
    for section, body in raw.items():
        if isinstance(body, dict):
            lines.append(f"\n[{section}]")
            lines.extend(f"{k} = {_toml_value(v)}" for k, v in body.items())
    return "\n".join(lines).lstrip("\n") + "\n"
