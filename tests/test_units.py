"""Units at the edge: hand values, malformed input and parse/format round trips."""

from __future__ import annotations

import math
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clusterplan import units
from clusterplan.errors import SpecError

# ---- hand values ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("parser", "text", "expected"),
    [
        (units.parse_count, "15T", 1.5e13),
        (units.parse_count, "2.5M", 2.5e6),
        (units.parse_count, "11G", 1.1e10),
        (units.parse_count, "15 T", 1.5e13),
        (units.parse_count, "42", 42.0),
        (units.parse_bytes, "96GiB", 96 * 2**30),
        (units.parse_bytes, "80GB", 8e10),
        (units.parse_bytes, "80.0 GiB", 80 * 2**30),
        (units.parse_bytes, "1KiB", 1024.0),
        (units.parse_bytes, "8Gb", 1e9),
        (units.parse_bytes, "12B", 12.0),
        (units.parse_bandwidth, "400Gb/s", 5e10),
        (units.parse_bandwidth, "400Gbps", 5e10),
        (units.parse_bandwidth, "2.9TB/s", 2.9e12),
        (units.parse_bandwidth, "900 GB/s", 9e11),
        (units.parse_duration, "54d", 54 * 86400.0),
        (units.parse_duration, "3us", 3e-6),
        (units.parse_duration, "3µs", 3e-6),
        (units.parse_duration, "250ms", 0.25),
        (units.parse_duration, "2h", 7200.0),
        (units.parse_duration, "90", 90.0),
        (units.parse_flops, "989.4T", 9.894e14),
        (units.parse_flops, "989.4TFLOP/s", 9.894e14),
        (units.parse_flops, "2PFLOPS", 2e15),
        (units.parse_power, "2.2GW", 2.2e9),
        (units.parse_power, "700W", 700.0),
    ],
)
def test_parse_hand_values(parser, text, expected):
    assert parser(text) == pytest.approx(expected, rel=1e-12)


def test_parse_exact_integer_values():
    assert units.parse_count("15T") == 1.5e13
    assert units.parse_bytes("96GiB") == 96 * 2**30
    assert units.parse_bytes("80GB") == 8e10
    assert units.parse_bandwidth("400Gb/s") == 5e10
    assert units.parse_bandwidth("400Gbps") == 5e10
    assert units.parse_duration("54d") == 4_665_600.0


@pytest.mark.parametrize(
    "parser",
    [units.parse_count, units.parse_bytes, units.parse_bandwidth, units.parse_flops,
     units.parse_duration, units.parse_power],
)
@pytest.mark.parametrize("value", [0, 7, 2.5, 1e15])
def test_numbers_pass_through(parser, value):
    result = parser(value)
    assert isinstance(result, float)
    assert result == float(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0.0, "0 B"),
        (80 * 2**30, "80.0 GiB"),
        (8.6e10, "80.1 GiB"),
        (96 * 2**30, "96.0 GiB"),
        (512.0, "512.0 B"),
        (1536.0, "1.5 KiB"),
    ],
)
def test_format_bytes_hand_values(value, expected):
    assert units.format_bytes(value) == expected


def test_format_other_hand_values():
    assert units.format_count(1.5e13) == "15.00 T"
    assert units.format_flops(9.894e14) == "989.4 TFLOP/s"
    assert units.format_bandwidth(2.9e12) == "2.9 TB/s"
    assert units.format_duration(54 * 86400.0) == "54.0 days"
    assert units.format_duration(3e-6) == "3.0 us"
    assert units.format_duration(0.25) == "250.0 ms"
    assert units.format_duration(90.0) == "90.00 s"
    assert units.format_duration(600.0) == "10.0 min"
    assert units.format_duration(7200.0) == "2.0 h"


# ---- malformed input ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("parser", "text"),
    [
        (units.parse_count, "abc"),
        (units.parse_count, ""),
        (units.parse_count, "15X"),
        (units.parse_count, "15TB"),
        (units.parse_count, "1.2.3T"),
        (units.parse_count, "T15"),
        (units.parse_bytes, "96"),
        (units.parse_bytes, "96Gi"),
        (units.parse_bytes, "96XB"),
        (units.parse_bytes, "GiB"),
        (units.parse_bytes, "96 GiB extra"),
        (units.parse_bandwidth, "2.9TB"),
        (units.parse_bandwidth, "fast"),
        *(
            pytest.param(units.parse_bandwidth, text)
            for text in ("2.9T/s", "2.9XB/s", "400Xbps")
        ),
        (units.parse_duration, "5 fortnights"),
        (units.parse_duration, "d"),
        (units.parse_duration, "3 parsecs"),
        (units.parse_flops, "1.5Q"),
        (units.parse_flops, "lots"),
        (units.parse_power, "2.2G"),
        (units.parse_power, "2.2XW"),
        (units.parse_power, "watts"),
    ],
)
def test_malformed_strings_raise_spec_error_naming_the_field(parser, text):
    with pytest.raises(SpecError) as caught:
        parser(text, "my.field")
    error = caught.value
    assert isinstance(error, ValueError)
    assert error.field == "my.field"
    assert error.value == text
    message = str(error)
    assert message.startswith("my.field=")
    assert repr(text) in message
    assert "\n" not in message
    assert error.rule


def test_default_field_names_per_parser():
    for parser, field in [(units.parse_count, "count"), (units.parse_bytes, "bytes"),
                          (units.parse_bandwidth, "bandwidth"), (units.parse_flops, "flops"),
                          (units.parse_duration, "duration"), (units.parse_power, "power")]:
        with pytest.raises(SpecError) as caught:
            parser("nonsense")
        assert caught.value.field == field


# ---- round trips ----------------------------------------------------------------------------

_SCALE = {"": 1.0, "Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40, "Pi": 2.0**50}


@settings(max_examples=300, deadline=None)
@given(st.floats(min_value=1.0, max_value=1e18, allow_nan=False, allow_infinity=False))
def test_bytes_round_trip_within_0_1_percent(x):
    """parse_bytes(format_bytes(x)) within 0.1 %; needs 3 decimals (the default 1 is coarser)."""
    text = units.format_bytes(x, digits=3)
    assert " " in text  # '80.123 GiB': the parser must accept the space
    back = units.parse_bytes(text)
    assert back == pytest.approx(x, rel=1e-3)
    # the space is optional for the parser
    assert units.parse_bytes(text.replace(" ", "")) == back


@settings(max_examples=300, deadline=None)
@given(st.floats(min_value=1.0, max_value=1e18, allow_nan=False, allow_infinity=False))
def test_bytes_round_trip_default_digits_within_display_resolution(x):
    """At the default 1 decimal, the round trip is exact to half a unit of the last digit."""
    text = units.format_bytes(x)
    match = re.fullmatch(r"(\d+\.\d) (Ki|Mi|Gi|Ti|Pi|)B", text)
    assert match is not None, text
    back = units.parse_bytes(text)
    assert abs(back - x) <= 0.05 * _SCALE[match.group(2)] * (1 + 1e-9)
    assert back == pytest.approx(x, rel=0.05)


def test_format_bytes_default_resolution_is_coarser_than_0_1_percent():
    """Documents why the 0.1 % round trip uses digits=3: 1.04 KiB prints as '1.0 KiB'."""
    x = 1.04 * 1024
    assert units.format_bytes(x) == "1.0 KiB"
    assert abs(units.parse_bytes(units.format_bytes(x)) - x) / x > 1e-3


@settings(max_examples=300, deadline=None)
@given(st.one_of(
    st.integers(min_value=-10**6, max_value=10**6),
    st.floats(min_value=-1e250, max_value=1e250, allow_nan=False, allow_infinity=False),
))
def test_count_with_tera_suffix(x):
    assert units.parse_count(f"{x}T") == x * 1e12


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=1.0, max_value=1e20, allow_nan=False, allow_infinity=False))
def test_bandwidth_and_flops_round_trip(x):
    assert units.parse_bandwidth(units.format_bandwidth(x, digits=4)) == pytest.approx(x, rel=1e-3)
    assert units.parse_flops(units.format_flops(x, digits=4)) == pytest.approx(x, rel=1e-3)
    assert units.parse_count(units.format_count(x, digits=4)) == pytest.approx(x, rel=1e-3)


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=1e-6, max_value=1e9, allow_nan=False, allow_infinity=False))
def test_duration_round_trip(x):
    text = units.format_duration(x)
    back = units.parse_duration(text)
    assert math.isfinite(back)
    assert back == pytest.approx(x, rel=0.05)


@pytest.mark.parametrize("seconds", [2592000.0, 90.0, 1.5, 5400.0, 0.001, 3600.0 * 7, 123456.789, 86400.0 * 365.25])
def test_exact_durations_parse_back_to_the_same_float(seconds: float) -> None:
    text = units.exact_duration(seconds)
    assert units.parse_duration(text) == seconds
    assert units.exact_duration(2592000.0) == "30d" and units.exact_duration(90.0) == "90s"


@pytest.mark.parametrize("count", [1.5e13, 2048.0, 0.3, 2e12, 123456789.0, 3.25e12])
def test_exact_counts_parse_back_to_the_same_float(count: float) -> None:
    assert units.parse_count(units.exact_count(count)) == count
    assert units.exact_count(1.5e13) == "15T"


# ---- table columns: one unit per column ------------------------------------------------------


def test_a_column_takes_one_prefix_from_its_largest_value():
    assert units.format_column([989.4e12, 2250e12, 20e15], "flops") == ("PFLOP/s", ["0.99", "2.25", "20.00"])
    assert units.format_column([8.5 * 2**30, 6e6, 17e6], "bytes") == ("GiB", ["8.500", "0.006", "0.016"])
    assert units.format_column([0.7349, 0.0983, 280e-6], "duration") == ("ms", ["734.90", "98.30", "0.28"])
    assert units.format_column([600.0, 30.0], "duration") == ("min", ["10.00", "0.50"])  # 2 significant digits


def test_a_column_can_be_told_its_prefix_and_marks_missing_values():
    assert units.format_column([405e9, 8e9, 2e12], "count", prefix="G") == ("G", ["405.0", "8.0", "2,000.0"])
    assert units.format_column([80 * 2**30, None, math.inf], "bytes", prefix="Gi", decimals=0) == (
        "GiB", ["80", "-", "-"])
    with pytest.raises(ValueError):
        units.format_column([1.0], "furlongs")
