"""Settings declared once: typed dataclass fields that carry their help, source and limits.

Every setting of contrastlab (a method's temperature, a view's crop scale, the batch size) is one
field of a :class:`Settings` dataclass, declared with :func:`setting` beside the code that uses
it::

    @dataclass
    class SimCLRSettings(MethodSettings):
        temperature: float = setting(0.5, "tau of NT-Xent", source="the paper's CIFAR-10 runs",
                                     gt=0)

From these declarations alone come the YAML keys, the command-line options and their ``--help``,
the checks of types and ranges (with the key, the value and what is allowed in the message) and
the resolved ``config.yaml`` of a run; nothing repeats a setting elsewhere. A new hyper-parameter
is therefore one field in one file (plus its test).

This module depends only on :mod:`contrastlab.errors`, so every layer may declare settings.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from contrastlab.errors import ConfigError, did_you_mean

_METADATA_KEY = "contrastlab.setting"

S = TypeVar("S", bound="Settings")


@dataclass(frozen=True)
class Limits:
    """What values a setting allows: bounds (numbers, or each number of a pair), choices, and for
    pairs whether they must be ordered (min <= max)."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple[str, ...] | None = None
    ordered: bool = False
    #: replaces the generated phrase after "must be", e.g. ">= 4 pixels"
    must_be: str | None = None
    #: inserted before "must be", e.g. "is a probability and "
    note: str = ""

    def allows(self, value: Any) -> bool:
        numbers = value if isinstance(value, tuple) else (value,)
        for number in numbers:
            if not isinstance(number, (int, float)) or isinstance(number, bool):
                continue
            if self.ge is not None and not number >= self.ge:
                return False
            if self.gt is not None and not number > self.gt:
                return False
            if self.le is not None and not number <= self.le:
                return False
            if self.lt is not None and not number < self.lt:
                return False
        if self.ordered and isinstance(value, tuple) and list(value) != sorted(value):
            return False
        return self.choices is None or value in self.choices

    def describe(self) -> str:
        """The allowed values in words: ``> 0``, ``in [0, 1)``, ``one of a, b``."""
        if self.must_be is not None:
            return self.must_be
        if self.choices is not None:
            return "one of " + ", ".join(self.choices)
        low = (f"[{_number(self.ge)}" if self.ge is not None
               else f"({_number(self.gt)}" if self.gt is not None else None)
        high = (f"{_number(self.le)}]" if self.le is not None
                else f"{_number(self.lt)})" if self.lt is not None else None)
        if low is not None and high is not None:
            return f"in {low}, {high}"
        if self.ge is not None:
            return f">= {_number(self.ge)}"
        if self.gt is not None:
            return f"> {_number(self.gt)}"
        if self.le is not None:
            return f"<= {_number(self.le)}"
        if self.lt is not None:
            return f"< {_number(self.lt)}"
        return "any value"

    @property
    def bounded(self) -> bool:
        return any(v is not None for v in (self.ge, self.gt, self.le, self.lt, self.choices,
                                           self.must_be)) or self.ordered


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else repr(value)


@dataclass(frozen=True)
class Declaration:
    """One setting as declared: field name, flat key (YAML key and ``--flag``), type, default,
    help, where the default comes from and its limits."""

    name: str
    key: str
    annotation: Any
    default: Any
    help: str
    source: str | None
    limits: Limits
    #: offered as a command-line option
    cli: bool = True

    @property
    def flag(self) -> str:
        return "--" + self.key.replace("_", "-")

    @property
    def optional(self) -> bool:
        return type(None) in typing.get_args(self.annotation)

    @property
    def value_type(self) -> Any:
        """The annotation without ``None``."""
        args = [a for a in typing.get_args(self.annotation) if a is not type(None)]
        if typing.get_origin(self.annotation) in (typing.Union, types.UnionType):
            return args[0]
        return self.annotation

    def describe_default(self) -> str:
        value = self.default
        if isinstance(value, tuple):
            return ",".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in value)
        if isinstance(value, bool):
            return "on" if value else "off"
        return str(value)


def setting(
    default: Any,
    help: str,
    *,
    source: str | None = None,
    key: str | None = None,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    choices: Sequence[str] | None = None,
    ordered: bool = False,
    must_be: str | None = None,
    note: str = "",
    cli: bool = True,
) -> Any:
    """Declare a setting: a dataclass field with its help, the source of its default (a paper,
    "here: ..." for a choice of this project) and its limits.

    Args:
        default: the default value (immutable: numbers, strings, tuples, None).
        help: one line saying what it does (shown by ``--help``).
        source: where the default comes from.
        key: the flat key (YAML key at the top level, ``--flag``) when it is not the field name,
            e.g. ``data`` for the data section's ``source``.
        ge, gt, le, lt: bounds of a number (of each number of a pair).
        choices: the allowed strings.
        ordered: a pair must be (min, max) with min <= max.
        must_be: the allowed values in words, replacing the generated phrase.
        note: words before "must be" in the error, e.g. "is a probability and ".
        cli: offered as a command-line option.
    """
    limits = Limits(ge=ge, gt=gt, le=le, lt=lt,
                    choices=tuple(choices) if choices is not None else None,
                    ordered=ordered, must_be=must_be, note=note)
    meta = {"help": help, "source": source, "key": key, "limits": limits, "cli": cli}
    return dataclasses.field(default=default, metadata={_METADATA_KEY: meta})


@functools.cache
def declarations(cls: type) -> tuple[Declaration, ...]:
    """The declared settings of a :class:`Settings` class, in field order."""
    hints = typing.get_type_hints(cls)
    found = []
    for item in dataclasses.fields(cls):
        if item.name.startswith("_"):
            continue
        meta = item.metadata.get(_METADATA_KEY)
        if meta is None:
            raise TypeError(f"{cls.__name__}.{item.name} is not declared with setting()")
        found.append(Declaration(
            name=item.name, key=meta["key"] or item.name, annotation=hints[item.name],
            default=item.default, help=meta["help"], source=meta["source"],
            limits=meta["limits"], cli=meta["cli"]))
    return tuple(found)


@dataclass
class Settings:
    """Base of every group of settings; values are checked when the object is made.

    Subclasses declare their fields with :func:`setting` and may override
    :meth:`check_together` for rules that tie several fields of the group together.
    """

    #: the YAML section this group belongs to (``method``, ``views``, ...)
    section: ClassVar[str] = ""

    def __post_init__(self) -> None:
        self.check()

    def check(self, source: str = "configuration") -> None:
        """Coerce every value to its declared type and check its limits.

        Raises:
            ConfigError: naming the first bad key, its value and what is allowed.
        """
        for declaration in declarations(type(self)):
            value = check_value(declaration, getattr(self, declaration.name), source,
                                parse_strings=False)
            object.__setattr__(self, declaration.name, value)
        self.check_together()

    def check_together(self) -> None:
        """Rules between several fields of this group (none by default)."""

    @classmethod
    def from_mapping(cls: type[S], values: Mapping[str, Any],
                     source: str = "configuration") -> S:
        """Make the group from ``{field name: value}``; unknown names are refused with the
        closest known one suggested, and wrong types name ``source`` (e.g. a file)."""
        known = {d.name: d for d in declarations(cls)}
        coerced = {}
        for name, value in values.items():
            if name not in known:
                hint = did_you_mean(str(name).replace("-", "_"), known, cutoff=0.5)
                where = f" of {cls.section}" if cls.section else ""
                raise ConfigError(f"unknown key '{name}'{where} in {source}.{hint}")
            coerced[name] = coerce(known[name].key, value, known[name].annotation, source)
        return cls(**coerced)

    def to_dict(self) -> dict[str, Any]:
        """``{field name: value}`` with pairs as lists (YAML- and JSON-friendly)."""
        return {d.name: _plain(getattr(self, d.name)) for d in declarations(type(self))}

    def replace(self: S, **changes: Any) -> S:
        """A copy with some fields changed (checked again)."""
        return dataclasses.replace(self, **changes)


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def check_value(declaration: Declaration, value: Any, source: str = "configuration",
                parse_strings: bool = True) -> Any:
    """``value`` coerced to the declaration's type and checked against its limits (strings are
    parsed as numbers, pairs and booleans only with ``parse_strings``, as for YAML and flags)."""
    key = declaration.key
    value = coerce(key, value, declaration.annotation, source, parse_strings)
    numbers = value if isinstance(value, tuple) else (value,)
    if any(isinstance(v, float) and not math.isfinite(v) for v in numbers):
        raise ConfigError(f"{key} must be a finite number, got {_show(value)}")
    if value is None:
        return value
    limits = declaration.limits
    if not limits.allows(value):
        if limits.choices is not None and limits.must_be is None:
            hint = did_you_mean(str(value), limits.choices)
            raise ConfigError(f"unknown {key} '{value}'.{hint} Choose one of "
                              f"{', '.join(limits.choices)}")
        raise ConfigError(f"{key} {limits.note}must be {limits.describe()}, got {_show(value)}")
    return value


def _show(value: Any) -> str:
    return str(value)


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", str(annotation))


def coerce(key: str, value: Any, annotation: Any, source: str = "configuration",
           parse_strings: bool = True) -> Any:
    """Coerce a YAML or command-line value to ``annotation`` (bool, int, float, str, a tuple of
    numbers given as a list or ``"a,b"``, or one of them or None). Without ``parse_strings``
    (values set from Python) a string is accepted only where a string is expected.

    Raises:
        ConfigError: ``"<key> in <source> must be of type <type>, got <value>"``.
    """
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return coerce(key, value, inner[0], source, parse_strings)
    if isinstance(value, str) and annotation is not str and not parse_strings:
        raise ConfigError(f"{key} in {source} must be of type {_type_name(annotation)}, got "
                          f"{value!r}")
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in value.replace(" ", "").split(",") if v]
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(
                f"{key} in {source} must be {len(args)} numbers (e.g. 0.08,1.0), got {value!r}"
            )
        return tuple(coerce(key, v, a, source, parse_strings)
                     for v, a in zip(value, args, strict=True))
    bad = ConfigError(f"{key} in {source} must be of type {_type_name(annotation)}, got {value!r}")
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0",
                                                        "on", "off"):
            return value.lower() in ("true", "yes", "1", "on")
        raise bad
    if annotation is int:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, int):
            return value
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                raise bad from None
        raise bad
    if annotation is float:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                raise bad from None
        raise bad
    if annotation is str:
        if isinstance(value, (str, Path)):
            return str(value)
        raise bad
    return value


__all__ = ["Declaration", "Limits", "Settings", "check_value", "coerce", "declarations",
           "setting"]
