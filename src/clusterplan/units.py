"""Human units at the edge, SI inside.

Parsing accepts the forms planners write (``15T`` tokens, ``96GiB``, ``2.9TB/s``, ``400Gb/s``,
``3us``, ``54d``, ``$50M``) and returns SI floats: bytes, bytes per second, seconds, FLOP/s,
counts, US dollars.
Formatting prints SI values back in the largest unit that keeps the number readable.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from clusterplan.errors import SpecError

_DECIMAL = {"": 1.0, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18}
_BINARY = {"Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40, "Pi": 2.0**50}
_NUMBER = r"([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)"

_TIME_UNITS = {
    "ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "sec": 1.0, "min": 60.0,
    "m": 60.0, "h": 3600.0, "hr": 3600.0, "d": 86400.0, "day": 86400.0, "days": 86400.0,
    "w": 7 * 86400.0, "y": 365.25 * 86400.0,
}


def _split(text: str, field: str) -> tuple[float, str]:
    match = re.fullmatch(rf"\s*{_NUMBER}\s*([A-Za-zµ/]*)\s*", text)
    if match is None:
        raise SpecError(field, text, "expected a number with an optional unit, e.g. 96GiB")
    number = float(match.group(1))
    if not math.isfinite(number):
        raise SpecError(field, text, "must be a finite number")
    return number, match.group(2)


def _prefix(prefix: str, field: str, text: str) -> float:
    if prefix in _BINARY:
        return _BINARY[prefix]
    if prefix in _DECIMAL:
        return _DECIMAL[prefix]
    raise SpecError(field, text, f"unknown unit prefix {prefix!r}")


def parse_count(value: str | float | int, field: str = "count") -> float:
    """``15T`` -> 1.5e13; ``2.5M`` -> 2.5e6; plain numbers pass through."""
    if isinstance(value, int | float):
        return float(value)
    number, unit = _split(value, field)
    return number * _prefix(unit, field, value)


def parse_bytes(value: str | float | int, field: str = "bytes") -> float:
    """``96GiB`` -> 103079215104; ``80GB`` -> 8e10. Bits (``Gb``) are divided by 8."""
    if isinstance(value, int | float):
        return float(value)
    number, unit = _split(value, field)
    if unit.endswith("B"):
        scale = 1.0
    elif unit.endswith("b"):
        scale = 1.0 / 8.0
    else:
        raise SpecError(field, value, "expected a size in bytes, e.g. 96GiB or 80GB")
    return number * scale * _prefix(unit[:-1], field, value)


def parse_bandwidth(value: str | float | int, field: str = "bandwidth") -> float:
    """``2.9TB/s`` -> 2.9e12 B/s; ``400Gb/s`` -> 5e10 B/s; ``400Gbps`` too."""
    if isinstance(value, int | float):
        return float(value)
    text = value.replace("ps", "/s") if value.rstrip().endswith("bps") else value
    number, unit = _split(text, field)
    rule = "expected a bandwidth, e.g. 2.9TB/s or 400Gb/s"
    if not unit.endswith("/s"):
        raise SpecError(field, value, rule)
    try:
        return parse_bytes(f"{number}{unit[:-2]}", field)
    except SpecError:
        raise SpecError(field, value, rule) from None


def parse_flops(value: str | float | int, field: str = "flops") -> float:
    """``989.4T`` or ``989.4TFLOP/s`` -> 9.894e14 FLOP/s."""
    if isinstance(value, int | float):
        return float(value)
    number, unit = _split(value, field)
    for suffix in ("FLOP/s", "FLOPS", "flops", "FLOP"):
        if unit.endswith(suffix):
            unit = unit[: -len(suffix)]
            break
    return number * _prefix(unit, field, value)


def parse_duration(value: str | float | int, field: str = "duration") -> float:
    """``54d`` -> 4665600 s; ``3us`` -> 3e-6 s; plain numbers are seconds."""
    if isinstance(value, int | float):
        return float(value)
    number, unit = _split(value, field)
    if unit == "":
        return number
    if unit not in _TIME_UNITS:
        raise SpecError(field, value, f"unknown time unit {unit!r} (use ns, us, ms, s, h, d)")
    return number * _TIME_UNITS[unit]


#: Money suffixes as planners write them: ``B`` is a billion dollars here, not a byte.
_USD_SCALE = {"": 1.0, "k": 1e3, "K": 1e3, "M": 1e6, "B": 1e9, "bn": 1e9, "T": 1e12}


def parse_usd(value: str | float | int, field: str = "usd") -> float:
    """``50M`` -> 5e7 USD; ``$2.5B`` -> 2.5e9; ``750k`` -> 7.5e5; plain numbers are dollars."""
    if isinstance(value, int | float):
        return float(value)
    match = re.fullmatch(rf"\s*\$?\s*{_NUMBER}\s*(bn|[kKMBT])?\s*(?:USD)?\s*", value)
    rule = "expected US dollars with an optional k, M, B or T suffix, e.g. 50M or $2.5B"
    if match is None:
        raise SpecError(field, value, rule)
    number = float(match.group(1))
    if not math.isfinite(number):
        raise SpecError(field, value, "must be a finite number")
    return number * _USD_SCALE[match.group(2) or ""]


def parse_power(value: str | float | int, field: str = "power") -> float:
    """``700W`` -> 700; ``2.2GW`` -> 2.2e9."""
    if isinstance(value, int | float):
        return float(value)
    number, unit = _split(value, field)
    if not unit.endswith("W"):
        raise SpecError(field, value, "expected a power, e.g. 700W or 2.2GW")
    return number * _prefix(unit[:-1], field, value)


Prefixes = list[tuple[float, str]]

_DEC_PREFIXES: Prefixes = [(1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"), (1.0, "")]
_BIN_PREFIXES: Prefixes = [(2.0**50, "Pi"), (2.0**40, "Ti"), (2.0**30, "Gi"), (2.0**20, "Mi"), (2.0**10, "Ki"),
                           (1.0, "")]
#: Durations: the unit is chosen by thresholds (a value prints in seconds up to 120 s, in minutes
#: up to 2 h, in hours up to 3 days), with the number of decimals each unit prints.
_DURATIONS: list[tuple[float, float, str, int]] = [  # (from, scale, unit, decimals)
    (3 * 86400.0, 86400.0, "days", 1), (7200.0, 3600.0, "h", 1), (120.0, 60.0, "min", 1), (1.0, 1.0, "s", 2),
    (1e-3, 1e-3, "ms", 1), (0.0, 1e-6, "us", 1)]
#: What a column of SI values can be: its prefixes (None: durations) and base unit.
KINDS: dict[str, tuple[Prefixes | None, str]] = {
    "bytes": (_BIN_PREFIXES, "B"), "flops": (_DEC_PREFIXES, "FLOP/s"), "bandwidth": (_DEC_PREFIXES, "B/s"),
    "count": (_DEC_PREFIXES, ""), "power": (_DEC_PREFIXES, "W"), "duration": (None, "s"),
}


def _prefix_for(value: float, prefixes: Prefixes) -> tuple[float, str]:
    """The largest prefix not above ``|value|`` (the smallest one for values below all)."""
    for scale, name in prefixes:
        if abs(value) >= scale:
            return scale, name
    return prefixes[-1]


def _duration_unit(seconds: float) -> tuple[float, str, int]:
    """(scale, unit, decimals) that ``seconds`` prints in."""
    for start, scale, name, decimals in _DURATIONS:
        if abs(seconds) >= start:
            return scale, name, decimals
    return _DURATIONS[-1][1:]


def _engineering(value: float, prefixes: Prefixes, unit: str, digits: int) -> str:
    if value == 0 or not math.isfinite(value):
        return f"{value:g} {unit}".strip()
    scale, name = _prefix_for(value, prefixes)
    return f"{value / scale:.{digits}f} {name}{unit}".strip()


def format_bytes(value: float, digits: int = 1) -> str:
    """8.6e10 -> '80.1 GiB' (binary prefixes, as memory is sold and reported by tools)."""
    return _engineering(value, _BIN_PREFIXES, "B", digits)


def format_count(value: float, digits: int = 2) -> str:
    return _engineering(value, _DEC_PREFIXES, "", digits)


def format_flops(value: float, digits: int = 1) -> str:
    return _engineering(value, _DEC_PREFIXES, "FLOP/s", digits)


def format_bandwidth(value: float, digits: int = 1) -> str:
    return _engineering(value, _DEC_PREFIXES, "B/s", digits)


def format_power(value: float, digits: int = 2) -> str:
    """2.2e9 -> '2.20 GW'."""
    return _engineering(value, _DEC_PREFIXES, "W", digits)


def format_duration(seconds: float) -> str:
    """Seconds -> the most readable of us, ms, s, min, h, days."""
    if not math.isfinite(seconds):
        return str(seconds)
    scale, name, decimals = _duration_unit(seconds)
    return f"{seconds / scale:.{decimals}f} {name}"


def _exact(value: float, scales: tuple[tuple[str, float], ...]) -> str:
    for unit, scale in scales:
        quotient = value / scale
        if quotient == round(quotient) and round(quotient) * scale == value and abs(quotient) < 1e15:
            return f"{round(quotient)}{unit}"
    return repr(float(value))


def exact_duration(seconds: float) -> str:
    """Seconds as a command-line duration that parses back to exactly the same float:
    2592000.0 -> '30d', 90.0 -> '90s', 1.5 -> '1.5'."""
    return _exact(seconds, (("d", 86400.0), ("h", 3600.0), ("min", 60.0), ("s", 1.0)))


def exact_count(value: float) -> str:
    """A count that parses back exactly: 1.5e13 -> '15T', 2048.0 -> '2048', 0.3 -> '0.3'."""
    return _exact(value, (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3), ("", 1.0)))


def column_unit(values: Sequence[float | None], kind: str, prefix: str | None = None) -> tuple[float, str, int]:
    """(scale, unit, decimals) for a whole table column of SI values of ``kind`` (a key of
    ``KINDS``): one prefix for the column, chosen from its largest finite ``|value|`` (or the
    given ``prefix``: ``"G"`` for parameter counts in billions), so every row reads in the same
    unit. Decimals: one (durations: the unit's own), more (up to three) when the smallest nonzero
    value would otherwise show fewer than two significant digits."""
    if kind not in KINDS:
        raise ValueError(f"unknown column kind {kind!r} (known: {', '.join(KINDS)})")
    prefixes, unit = KINDS[kind]
    finite = [abs(v) for v in values if v is not None and math.isfinite(v)]
    largest = max(finite, default=0.0)
    if prefixes is None:
        scale, name, decimals = _duration_unit(largest)
    else:
        if prefix is not None:
            scale = dict((name, scale) for scale, name in prefixes)[prefix]
        else:
            scale, prefix = _prefix_for(largest, prefixes) if largest > 0 else (1.0, "")
        name, decimals = prefix + unit, 1
    smallest = min((v for v in finite if v > 0), default=0.0) / scale
    while 0 < smallest < 10.0 ** (1 - decimals) and decimals < 3:
        decimals += 1
    return scale, name, decimals


def format_column(values: Sequence[float | None], kind: str, *, decimals: int | None = None,
                  prefix: str | None = None, missing: str = "-") -> tuple[str, list[str]]:
    """The unit of a table column and its cells, numbers only (the unit goes in the header):
    ``format_column([8.5 * 2**30, 6e6], "bytes")`` -> ``("GiB", ["8.500", "0.006"])``. ``None``,
    NaN and infinities print as ``missing``."""
    scale, unit, chosen = column_unit(values, kind, prefix)
    digits = chosen if decimals is None else decimals
    cells = [missing if v is None or not math.isfinite(v) else f"{v / scale:,.{digits}f}" for v in values]
    return unit, cells
