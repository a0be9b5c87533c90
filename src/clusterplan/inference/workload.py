"""Serving workloads: requests as a struct of arrays, arrival generators and trace files.

A :class:`Workload` holds, for ``n`` requests sorted by arrival, the arrival time in seconds and the
prompt (``input_tokens``) and generated (``output_tokens``) lengths. Generators:

* :func:`poisson` — open loop, exponential inter-arrival times at ``rate`` requests/s;
* :func:`bursty` — open loop, a two-state Markov-modulated Poisson process (calm and burst states,
  exponential dwell times; the burst rate is ``burst_factor`` times the calm rate; the long-run
  mean rate is ``rate``);
* :func:`closed_loop` — fixed concurrency: the workload carries ``concurrency`` and its arrival
  times are ignored; the simulator issues the first ``concurrency`` requests at t = 0 and the next
  one each time one finishes (no think time);
* :func:`offline` — every request queued at t = 0 (saturated throughput, as benchmarks do);
* :func:`from_trace` / :func:`write_trace` — CSV (header ``timestamp,input_tokens,output_tokens``,
  extra columns ignored) or JSON Lines (one object per line with those keys).

Lengths are fixed or lognormally spread: ``input_spread`` / ``output_spread`` are coefficients of
variation (standard deviation / mean); samples are rounded and clipped to at least one token.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

from clusterplan.errors import SpecError

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

#: Columns (CSV) or keys (JSON Lines) of a trace file.
TRACE_FIELDS = ("timestamp", "input_tokens", "output_tokens")


class Request(NamedTuple):
    """One request of a workload (``workload[i]``)."""

    arrival_s: float
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class Workload:
    """Requests as a struct of arrays, sorted by arrival (arrays are read-only).

    ``concurrency`` marks a closed-loop workload: the simulator keeps that many requests in flight
    and ignores ``arrival_s`` (it reports the times it issued them instead).
    """

    arrival_s: FloatArray
    input_tokens: IntArray
    output_tokens: IntArray
    concurrency: int | None = None

    def __post_init__(self) -> None:
        arrival = np.array(self.arrival_s, dtype=np.float64, ndmin=1)
        inputs = _int_array("input_tokens", self.input_tokens)
        outputs = _int_array("output_tokens", self.output_tokens)
        if arrival.ndim != 1 or not (len(arrival) == len(inputs) == len(outputs)):
            raise SpecError("workload", (arrival.shape, inputs.shape, outputs.shape),
                            "arrival_s, input_tokens and output_tokens must be 1-D arrays of one length")
        if len(arrival) == 0:
            raise SpecError("workload", 0, "must hold at least one request")
        if not np.all(np.isfinite(arrival)) or np.any(arrival < 0):
            raise SpecError("arrival_s", float(arrival[~(np.isfinite(arrival) & (arrival >= 0))][0]),
                            "arrival times must be finite and >= 0")
        if np.any(np.diff(arrival) < 0):
            i = int(np.flatnonzero(np.diff(arrival) < 0)[0]) + 1
            raise SpecError("arrival_s", float(arrival[i]),
                            f"arrival times must be sorted (request {i} arrives before request {i - 1})")
        for field, array in (("input_tokens", inputs), ("output_tokens", outputs)):
            if np.any(array < 1):
                i = int(np.flatnonzero(array < 1)[0])
                raise SpecError(field, int(array[i]), f"request {i}: a request needs at least one token")
        if self.concurrency is not None and (isinstance(self.concurrency, bool) or int(self.concurrency) < 1
                                             or int(self.concurrency) != self.concurrency):
            raise SpecError("concurrency", self.concurrency, "must be a whole number >= 1")
        columns: tuple[tuple[str, NDArray[Any]], ...] = (
            ("arrival_s", arrival), ("input_tokens", inputs), ("output_tokens", outputs))
        for name, column in columns:
            column.setflags(write=False)
            object.__setattr__(self, name, column)
        if self.concurrency is not None:
            object.__setattr__(self, "concurrency", int(self.concurrency))

    def __len__(self) -> int:
        return len(self.arrival_s)

    def __getitem__(self, i: int) -> Request:
        return Request(float(self.arrival_s[i]), int(self.input_tokens[i]), int(self.output_tokens[i]))

    @property
    def closed_loop(self) -> bool:
        return self.concurrency is not None

    @classmethod
    def from_requests(cls, requests: list[Request] | list[tuple[float, int, int]]) -> Workload:
        """A workload from (arrival_s, input_tokens, output_tokens) rows, sorted by arrival (stable)."""
        if not requests:
            raise SpecError("workload", 0, "must hold at least one request")
        rows = sorted(requests, key=lambda r: r[0])
        return cls(np.array([r[0] for r in rows], dtype=np.float64), np.array([r[1] for r in rows]),
                   np.array([r[2] for r in rows]))

    def total_tokens(self) -> int:
        return int(self.input_tokens.sum() + self.output_tokens.sum())


def _int_array(field: str, values: Any) -> IntArray:
    array = np.array(values, ndmin=1)
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)) or np.any(array != np.round(array)):
            raise SpecError(field, values if np.ndim(values) == 0 else "array", "token counts must be whole numbers")
    elif array.dtype.kind not in "iub":
        raise SpecError(field, str(array.dtype), "token counts must be whole numbers")
    return array.astype(np.int64)


# ---------------------------------------------------------------------------------------------- generators


def _check_count(n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise SpecError("n", n, "number of requests must be a whole number >= 1")
    return int(n)


def _check_positive(field: str, value: float) -> float:
    if not (isinstance(value, int | float | np.integer | np.floating) and math.isfinite(value) and value > 0):
        raise SpecError(field, value, "must be a finite number > 0")
    return float(value)


def _lengths(rng: np.random.Generator, field: str, mean: float, spread: float, n: int) -> IntArray:
    if not (isinstance(mean, int | float | np.integer | np.floating) and math.isfinite(mean) and mean >= 1):
        raise SpecError(field, mean, "must be a number of tokens >= 1")
    if not (math.isfinite(spread) and spread >= 0):
        raise SpecError(field.replace("tokens", "spread"), spread, "must be a finite coefficient of variation >= 0")
    if spread == 0:
        return np.full(n, int(np.rint(mean)), dtype=np.int64)
    # lognormal with E = mean and sd/E = spread: sigma^2 = ln(1 + spread^2), mu = ln(mean) - sigma^2/2
    # (token lengths are positive and right-skewed); rounding and the one-token floor move the
    # mean by well under a token for means >> 1
    sigma2 = math.log1p(spread * spread)
    draws = rng.lognormal(math.log(mean) - sigma2 / 2, math.sqrt(sigma2), n)
    return np.maximum(np.rint(draws), 1).astype(np.int64)


def _finish(arrival: FloatArray, rng: np.random.Generator, n: int, input_tokens: float, output_tokens: float,
            input_spread: float, output_spread: float, concurrency: int | None = None) -> Workload:
    inputs = _lengths(rng, "input_tokens", input_tokens, input_spread, n)
    outputs = _lengths(rng, "output_tokens", output_tokens, output_spread, n)
    return Workload(arrival, inputs, outputs, concurrency)


def poisson(rate: float, n: int, input_tokens: float, output_tokens: float, seed: int = 0,
            input_spread: float = 0.0, output_spread: float = 0.0) -> Workload:
    """``n`` requests arriving as a Poisson process of ``rate`` requests per second (first at Exp(rate))."""
    rate = _check_positive("rate", rate)
    n = _check_count(n)
    rng = np.random.default_rng(seed)
    arrival = np.cumsum(rng.exponential(1.0 / rate, n))
    return _finish(arrival, rng, n, input_tokens, output_tokens, input_spread, output_spread)


def bursty(rate: float, n: int, burst_factor: float, input_tokens: float, output_tokens: float, seed: int = 0,
           burst_fraction: float = 0.2, burst_duration_s: float | None = None, input_spread: float = 0.0,
           output_spread: float = 0.0) -> Workload:
    """``n`` requests from a two-state Markov-modulated Poisson process of long-run mean ``rate``.

    The process spends a fraction ``burst_fraction`` of the time in bursts, whose rate is
    ``burst_factor`` times the calm rate; bursts last Exp(``burst_duration_s``) (default: 50 mean
    inter-arrival times, ``50 / rate``), calm periods Exp(``burst_duration_s (1 - f) / f``). It starts
    in the calm state. ``burst_factor = 1`` is a Poisson process.
    """
    rate = _check_positive("rate", rate)
    n = _check_count(n)
    burst_factor = _check_positive("burst_factor", burst_factor)
    if burst_factor < 1:
        raise SpecError("burst_factor", burst_factor, "must be >= 1 (burst rate / calm rate)")
    if not (0 < burst_fraction < 1):
        raise SpecError("burst_fraction", burst_fraction, "must be strictly between 0 and 1")
    burst_s = 50.0 / rate if burst_duration_s is None else _check_positive("burst_duration_s", burst_duration_s)
    calm_s = burst_s * (1 - burst_fraction) / burst_fraction
    calm_rate = rate / (burst_fraction * burst_factor + 1 - burst_fraction)
    burst_rate = burst_factor * calm_rate
    rng = np.random.default_rng(seed)
    per_pair = calm_rate * calm_s + burst_rate * burst_s
    starts: list[FloatArray] = []
    lengths: list[FloatArray] = []
    counts: list[IntArray] = []
    clock, total = 0.0, 0
    while total < n:
        pairs = max(16, int(1.2 * (n - total) / per_pair) + 1)
        dwell = np.empty(2 * pairs)
        dwell[0::2] = rng.exponential(calm_s, pairs)
        dwell[1::2] = rng.exponential(burst_s, pairs)
        rates = np.tile([calm_rate, burst_rate], pairs)
        count = rng.poisson(rates * dwell)
        start = clock + np.concatenate(([0.0], np.cumsum(dwell)[:-1]))
        starts.append(start)
        lengths.append(dwell)
        counts.append(count)
        clock = float(start[-1] + dwell[-1])
        total += int(count.sum())
    count = np.concatenate(counts)
    arrival = np.repeat(np.concatenate(starts), count) + rng.random(int(count.sum())) * np.repeat(
        np.concatenate(lengths), count)
    arrival = np.sort(arrival)[:n]
    return _finish(arrival, rng, n, input_tokens, output_tokens, input_spread, output_spread)


def closed_loop(concurrency: int, n: int, input_tokens: float, output_tokens: float, seed: int = 0,
                input_spread: float = 0.0, output_spread: float = 0.0) -> Workload:
    """``n`` requests issued by ``concurrency`` clients, each sending its next request when one finishes."""
    n = _check_count(n)
    if isinstance(concurrency, bool) or not isinstance(concurrency, int | np.integer) or concurrency < 1:
        raise SpecError("concurrency", concurrency, "must be a whole number >= 1")
    rng = np.random.default_rng(seed)
    return _finish(np.zeros(n), rng, n, input_tokens, output_tokens, input_spread, output_spread, int(concurrency))


def offline(n: int, input_tokens: float, output_tokens: float, seed: int = 0, input_spread: float = 0.0,
            output_spread: float = 0.0) -> Workload:
    """``n`` requests all queued at t = 0 (saturated, offline throughput)."""
    n = _check_count(n)
    rng = np.random.default_rng(seed)
    return _finish(np.zeros(n), rng, n, input_tokens, output_tokens, input_spread, output_spread)


# ---------------------------------------------------------------------------------------------- trace files


def _is_jsonl(path: Path, first_line: str) -> bool:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return True
    if suffix == ".csv":
        return False
    return first_line.lstrip().startswith("{")


def _parse_time(where: str, raw: Any) -> float:
    if isinstance(raw, bool):
        raise SpecError(where, raw, "timestamp must be a number of seconds")
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise SpecError(where, raw, "timestamp must be a number of seconds") from None
    if not math.isfinite(value):
        raise SpecError(where, raw, "timestamp must be finite")
    if value < 0:
        raise SpecError(where, raw, "timestamp must be >= 0")
    return value


def _parse_tokens(where: str, raw: Any) -> int:
    if isinstance(raw, bool):
        raise SpecError(where, raw, "token count must be a whole number >= 1")
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise SpecError(where, raw, "token count must be a whole number >= 1") from None
    if not math.isfinite(value) or value != math.floor(value):
        raise SpecError(where, raw, "token count must be a whole number >= 1")
    if value < 1:
        raise SpecError(where, raw, "token count must be >= 1 (zero-length requests are refused)")
    return int(value)


#: Largest trace file read (bytes): millions of requests; the bound keeps memory bounded whatever
#: the path names (``/dev/zero``).
MAX_TRACE_BYTES = 256 * 2**20


def _csv_rows(lines: list[str], path: Path) -> Iterator[list[str]]:
    """``csv.reader`` over ``lines``, its errors (a field over the csv module's size limit, a NUL)
    refused as a SpecError naming the file and line."""
    reader = csv.reader(lines)
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            raise SpecError(f"{path}:{reader.line_num + 1}", "CSV row", f"malformed CSV ({error})") from None
        yield row


def from_trace(path: str | Path) -> Workload:
    """Read a trace: CSV with a ``timestamp,input_tokens,output_tokens`` header (any column order, extra
    columns ignored) or JSON Lines of objects with those keys (``.jsonl``/``.ndjson``, or content starting
    with ``{``). Timestamps are seconds, ``>= 0`` and non-decreasing; token counts whole numbers ``>= 1``.
    Anything else is refused with a :class:`SpecError` naming the file, line and column.
    """
    path = Path(path)
    try:
        with path.open("rb") as stream:
            raw = stream.read(MAX_TRACE_BYTES + 1)
        text = raw.decode("utf-8") if len(raw) <= MAX_TRACE_BYTES else ""
    except FileNotFoundError:
        raise SpecError("trace", str(path), "file not found") from None
    except UnicodeDecodeError as error:
        raise SpecError("trace", str(path), f"not UTF-8 text (byte 0x{error.object[error.start]:02x} at offset "
                        f"{error.start:,})") from None
    except OSError as error:
        raise SpecError("trace", str(path), f"cannot read file ({error.strerror or error})") from None
    except ValueError as error:  # a NUL in the path
        raise SpecError("trace", str(path), f"not a usable path ({error})") from None
    if len(raw) > MAX_TRACE_BYTES:
        raise SpecError("trace", str(path), f"file is larger than {MAX_TRACE_BYTES // 2**20} MiB")
    lines = text.splitlines()
    first = next((line for line in lines if line.strip()), "")
    if not first:
        raise SpecError("trace", str(path), "file is empty (no requests)")
    rows: list[tuple[int, Any, Any, Any]] = []  # (line number, timestamp, input, output) raw
    if _is_jsonl(path, first):
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as error:
                raise SpecError(f"{path}:{number}", line.strip()[:60], f"malformed JSON ({error.msg})") from None
            except RecursionError:
                raise SpecError(f"{path}:{number}", line.strip()[:60], "JSON nested too deeply") from None
            if not isinstance(item, dict):
                raise SpecError(f"{path}:{number}", line.strip()[:60], "each line must be a JSON object")
            missing = [key for key in TRACE_FIELDS if key not in item]
            if missing:
                raise SpecError(f"{path}:{number}", sorted(item), f"missing key(s) {', '.join(missing)} "
                                f"(each line needs {', '.join(TRACE_FIELDS)})")
            rows.append((number, item["timestamp"], item["input_tokens"], item["output_tokens"]))
    else:
        reader = _csv_rows(lines, path)
        header_number = 0
        header: list[str] = []
        for row_number, row in enumerate(reader, start=1):
            if any(cell.strip() for cell in row):
                header_number, header = row_number, row
                break
        names = [cell.strip().lower() for cell in header]
        missing = [key for key in TRACE_FIELDS if key not in names]
        if missing:
            raise SpecError(f"{path}:{header_number}", ",".join(header)[:80],
                            f"CSV header lacks column(s) {', '.join(missing)} (needs {', '.join(TRACE_FIELDS)})")
        columns = [names.index(key) for key in TRACE_FIELDS]
        width = max(columns) + 1
        for number, cells in enumerate(reader, start=header_number + 1):
            if not any(cell.strip() for cell in cells):
                continue
            if len(cells) < width:
                raise SpecError(f"{path}:{number}", ",".join(cells)[:80],
                                f"row has {len(cells)} column(s), the header {len(header)}")
            stamp, prompt, generated = (cells[c].strip() for c in columns)
            rows.append((number, stamp, prompt, generated))
    if not rows:
        raise SpecError("trace", str(path), "file holds no requests")
    arrival = np.empty(len(rows))
    inputs = np.empty(len(rows), dtype=np.int64)
    outputs = np.empty(len(rows), dtype=np.int64)
    previous = -math.inf
    for i, (number, stamp, prompt, generated) in enumerate(rows):
        where = f"{path}:{number}"
        t = _parse_time(f"{where} timestamp", stamp)
        if t < previous:
            raise SpecError(f"{where} timestamp", stamp,
                            f"timestamps must be non-decreasing (previous request at {previous!r})")
        previous = t
        arrival[i] = t
        inputs[i] = _parse_tokens(f"{where} input_tokens", prompt)
        outputs[i] = _parse_tokens(f"{where} output_tokens", generated)
    return Workload(arrival, inputs, outputs)


def write_trace(workload: Workload, path: str | Path) -> None:
    """Write ``workload`` as a trace :func:`from_trace` reads back exactly: JSON Lines when the suffix
    is ``.jsonl``/``.ndjson``/``.json``, CSV otherwise (closed-loop markers are not stored)."""
    path = Path(path)
    arrival = workload.arrival_s.tolist()
    inputs = workload.input_tokens.tolist()
    outputs = workload.output_tokens.tolist()
    if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        text = "".join(json.dumps(dict(zip(TRACE_FIELDS, row, strict=True))) + "\n"
                       for row in zip(arrival, inputs, outputs, strict=True))
    else:
        text = ",".join(TRACE_FIELDS) + "\n" + "".join(
            f"{t!r},{p},{o}\n" for t, p, o in zip(arrival, inputs, outputs, strict=True))
    path.write_text(text, encoding="utf-8")
