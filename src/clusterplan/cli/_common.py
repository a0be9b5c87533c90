"""What every command shares: one-line refusals and exit codes, output paths checked before
any work, ``--json`` output, and the Plan options of train, search and reliability."""

from __future__ import annotations

import difflib
import os
import stat
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar, get_origin

import typer
from pydantic import BaseModel, ValidationError
from rich.console import Console

from clusterplan.api._edge import (
    csv_items,
    flag,
    json_text,
)
from clusterplan.catalog.loader import read_yaml, validation_message
from clusterplan.errors import SpecError
from clusterplan.report.console import ReportConsole
from clusterplan.specs import Plan
from clusterplan.specs._base import Spec
from clusterplan.training.batch import DEFAULT_ROUTING_GINI

#: stdout: tables and text (the width rule and the table rule of report/console.py)
console: Console = ReportConsole()
P = ParamSpec("P")
R = TypeVar("R")
RequestT = TypeVar("RequestT", bound=BaseModel)
SpecT = TypeVar("SpecT", bound=Spec)


#: Exit codes (README, "Exit codes"): 0 answered; 1 a valid question whose answer is no (the plan
#: does not fit, no plan or deployment meets the target); 2 bad input; 130 interrupted (Ctrl-C).
EXIT_NO_ANSWER = 1
EXIT_BAD_INPUT = 2
EXIT_ABORTED = 130


def error_line(message: str) -> None:
    """Print ``error: message`` on stderr as one printable line (an argument that was not valid
    UTF-8 reaches Python as lone surrogates: they are shown escaped, not raised on)."""
    text = " ".join(f"error: {message}".splitlines())
    typer.echo(text.encode("utf-8", "backslashreplace").decode("utf-8"), err=True)


def refuse(message: str, code: int = EXIT_BAD_INPUT) -> None:
    """Print ``error: message`` (one line, on stderr) and end with ``code``."""
    error_line(message)
    raise typer.Exit(code=code)


def one_line(error: BaseException) -> tuple[int, str] | None:
    """The exit code and one-line message the command line ends with on ``error``; None for an
    exception that is not about the input (a bug: it keeps its traceback).

    The one place that maps exceptions to exit codes: SpecError (bad input, 2) and its NoAnswerError
    (a valid question answered no, 1), pydantic errors on a spec (2), and an input file the
    loader could not decode (2)."""
    if isinstance(error, SpecError):
        return error.exit_code, str(error)
    if isinstance(error, ValidationError):
        return EXIT_BAD_INPUT, validation_message(error)
    return None


def clean_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Turn spec errors into one line and their exit code (no traceback); see :func:`one_line`."""

    @wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except (SpecError, ValidationError) as error:
            code, message = one_line(error) or (EXIT_BAD_INPUT, str(error))
            refuse(message, code)
        raise AssertionError("unreachable")

    return wrapper


# ---- output paths: checked before any work, so a bad one costs nothing ------------------------
def _cannot_create_in(folder: Path) -> str | None:
    """Why a file cannot be created in ``folder`` (tried for real: a temporary file made and
    removed, since permission bits say nothing to root or on a read-only mount); None if it can."""
    import tempfile

    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        return error.strerror or str(error)
    return None


def output_file(path: Path, option: str) -> Path:
    """``path`` if a regular file can be written there (atomically: a temporary file beside it,
    then a rename); else a SpecError on ``option``. A folder, a link, a device or a pipe is
    refused, not replaced; so is a path whose folder is missing or not writable."""
    try:
        mode: int | None = os.lstat(path).st_mode
    except FileNotFoundError:
        mode = None
    except (OSError, ValueError) as error:  # ValueError: a NUL in the path
        raise SpecError(option, str(path), f"cannot be examined ({getattr(error, 'strerror', None) or error})"
                        ) from None
    if mode is not None and stat.S_ISDIR(mode):
        raise SpecError(option, str(path), "is a folder; give a file path")
    if mode is not None and not stat.S_ISREG(mode):
        kind = "a symbolic link" if stat.S_ISLNK(mode) else "not a regular file (a device, pipe or socket)"
        raise SpecError(option, str(path), f"is {kind}; give the path of a regular file")
    folder = path.parent
    if not folder.is_dir():
        raise SpecError(option, str(path), "its folder does not exist")
    reason = _cannot_create_in(folder)
    if reason is not None:
        raise SpecError(option, str(path), f"its folder is not writable ({reason})")
    return path


def output_dir(path: Path, option: str, names: tuple[str, ...] = ()) -> Path:
    """``path`` if report files can be written in it: an existing writable folder, or a missing
    one whose nearest existing parent is a writable folder (it is created when written); each
    of ``names`` already in it must be a regular file. Else a SpecError on ``option``."""
    if "\0" in str(path):
        raise SpecError(option, str(path), "not a usable path (a NUL character)")
    if path.exists() or path.is_symlink():
        if not path.is_dir():
            raise SpecError(option, str(path), "is not a folder")
        reason = _cannot_create_in(path)
        if reason is not None:
            raise SpecError(option, str(path), f"is not writable ({reason})")
        for name in names:
            output_file(path / name, option)
        return path
    parent = path.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise SpecError(option, str(path), f"cannot be created: {parent} is not a folder")
    reason = _cannot_create_in(parent)
    if reason is not None:
        raise SpecError(option, str(path), f"cannot be created in {parent} ({reason})")
    return path


def write_or_refuse(option: str, path: Path, write: Callable[[], R]) -> R:
    """Run ``write`` (which writes at ``path``); an OSError it raises (disk full, a folder that
    changed since it was checked) is a one-line refusal on ``option``, not a traceback."""
    try:
        return write()
    except OSError as error:
        raise SpecError(option, str(path), f"cannot write ({error.strerror or error})") from None


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) at ``path`` through a temporary file beside it and a rename: a
    reader sees the old file or the new one, never half of one."""
    import tempfile

    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def request_or_refuse(request_type: type[RequestT], **fields: Any) -> RequestT:
    """The API request of the options given (an option left out, None, is not passed: the
    request's default applies); a value its rules refuse is one line naming the option (the
    field's ``--flag``), the value and the rule."""
    given = {name: value for name, value in fields.items() if value is not None}
    try:
        return request_type(**given)
    except ValidationError as error:
        first = error.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else request_type.__name__
        rule = str(first["msg"]).removeprefix("Value error, ")
        raise SpecError(flag(field), given.get(field, first.get("input")), rule) from None


def _shown_override(field: str, value: Any) -> str:
    """One what-if of a record's ``overrides`` as the option that gives it (``--chips 100k``)."""
    from clusterplan import units

    if isinstance(value, bool):
        return flag(field) if value else f"--no-{flag(field).removeprefix('--')}"
    if field in ("slo_ttft", "slo_tpot"):
        text = units.format_duration(value).replace(" ", "")
    elif field == "power_envelope_w":
        text = units.format_power(value).replace(" ", "")
    elif isinstance(value, list):
        text = ",".join(units.exact_count(item) for item in value)
    elif isinstance(value, int | float) and field not in ("capex_scale", "ai_share", "failure_scale"):
        text = units.exact_count(value)
    else:
        text = f"{value:g}" if isinstance(value, float) else str(value)
    return f"{flag(field)} {text}"


def print_overrides(record: dict[str, Any]) -> None:
    """The what-ifs an answer was computed with, one line (nothing when there were none)."""
    overrides = record.get("overrides") or {}
    if overrides:
        shown = ", ".join(_shown_override(field, value) for field, value in overrides.items())
        console.print(f"what-if: {shown}", highlight=False, markup=False)


def emit_json(record: Any) -> None:
    """Print ``record`` as the one JSON object of ``--json`` (docs/json.md)."""
    sys.stdout.write(json_text(record))


# ---- plan options: one definition per Plan field, shared by train, search and reliability ------
def _plan_option(field: str, text: str, *declarations: str, default: str | None = None) -> Any:
    """A typer option for Plan ``field``; its default is None (= not given: a --plan file or the
    Plan default applies), and the help states the Plan default."""
    value = Plan.model_fields[field].default if default is None else default
    if isinstance(value, bool):
        value = "on" if value else "off"
    elif isinstance(value, tuple):
        value = ",".join(value)
    return typer.Option(*declarations, help=f"{text} (default: {value})")


TpOption = Annotated[int | None, _plan_option("tp", "tensor parallelism")]
PpOption = Annotated[int | None, _plan_option("pp", "pipeline parallelism")]
VpOption = Annotated[int | None, _plan_option("vp", "virtual stages per pipeline rank (interleaving)")]
CpOption = Annotated[int | None, _plan_option("cp", "context parallelism")]
DpOption = Annotated[int | None, _plan_option("dp", "data parallelism", default="chips/(tp*pp*cp)")]
EpOption = Annotated[int | None, _plan_option("ep", "expert parallelism (MoE models)")]
EtpOption = Annotated[int | None, _plan_option("etp", "expert tensor parallelism (MoE models)")]
CapacityFactorOption = Annotated[float | None, _plan_option(
    "capacity_factor", "MoE: expert capacity factor (token dropping)", default="dropless")]
RoutingGiniOption = Annotated[float | None, _plan_option(
    "routing_gini", "MoE: Gini of per-expert token load (0 = balanced, as published runs; "
    "0.2 = real-text skew)", default=str(DEFAULT_ROUTING_GINI))]
OverlapEpOption = Annotated[bool | None, _plan_option(
    "overlap_ep", "MoE: overlap EP all-to-alls (DualPipe-style)", "--overlap-ep/--no-overlap-ep")]
EpDedupOption = Annotated[bool | None, _plan_option(
    "ep_dedup", "MoE: dispatch each token once per destination node, fp8 in fp8/fp4 plans (DeepEP, "
    "HybridEP); off: flat all-to-all", "--ep-dedup/--no-ep-dedup")]
EpWithinScaleUpOption = Annotated[bool | None, _plan_option(
    "ep_within_scale_up", "require EP x ETP inside one scale-up domain", "--ep-within-scale-up")]
MtpOption = Annotated[int | None, _plan_option("mtp", "multi-token-prediction depth (DeepSeek-V3: 1)")]
MicroBatchOption = Annotated[int | None, _plan_option("micro_batch", "micro-batch (sequences)")]
SeqOption = Annotated[int | None, typer.Option("--seq", help="sequence length (tokens); or seq_len in --plan")]
GlobalBatchOption = Annotated[int | None, typer.Option(
    help="global batch (sequences per step); or global_batch in --plan")]
RecomputeOption = Annotated[str | None, _plan_option("recompute", "none | selective | full")]
RecomputeModulesOption = Annotated[str | None, _plan_option(
    "recompute_modules", "what selective recompute re-runs: core_attn, layernorm, moe_act, elementwise, "
    "mla_up_proj, mlp, moe, shared_experts (comma-separated; Megatron --recompute-modules)")]
SpOption = Annotated[bool | None, _plan_option("sp", "sequence parallelism", "--sp/--no-sp",
                                               default="on when tp > 1")]
ZeroOption = Annotated[int | None, _plan_option("zero", "ZeRO stage 0-3 (1 = distributed optimizer)")]
DpShardOption = Annotated[int | None, _plan_option(
    "dp_shard", "ZeRO sharding group (HSDP): shard over this many of the dp*cp replicas", default="dp*cp")]
PrecisionOption = Annotated[str | None, _plan_option("precision", "bf16 | fp8 | fp4 matmuls")]
GradReduceOption = Annotated[str | None, _plan_option(
    "grad_reduce", "gradient buffer and reduction dtype: bf16 (any 16-bit one; NeMo's recipes) | fp32 "
    "(Megatron-LM's bf16 default)")]
OptimizerMomentsOption = Annotated[str | None, _plan_option(
    "optimizer_moments", "dtype of Adam's two moments: fp32 | bf16 (Megatron-Core --exp-avg-dtype/"
    "--exp-avg-sq-dtype bf16 with --use-precision-aware-optimizer)")]
OverlapDpOption = Annotated[bool | None, _plan_option(
    "overlap_dp", "overlap DP reduction with backward", "--overlap-dp/--no-overlap-dp")]
OverlapTpOption = Annotated[bool | None, _plan_option(
    "overlap_tp", "overlap TP comm with GEMMs", "--overlap-tp/--no-overlap-tp")]
OverlapPpOption = Annotated[bool | None, _plan_option(
    "overlap_pp", "overlap pipeline sends with compute", "--overlap-pp/--no-overlap-pp")]
FlashAttentionOption = Annotated[bool | None, _plan_option(
    "flash_attention", "fused attention (no s x s scores kept)", "--flash-attention/--no-flash-attention")]
AttentionKernelOption = Annotated[str | None, _plan_option(
    "attention_kernel", "fused-attention library: flash1 | flash2 | cudnn | flash3 | auto (the chip family's "
    "reference: cudnn, flash2 on Ampere; measured rates: catalog/kernels.yaml)", "--attention-kernel")]
Fp8ParamsOption = Annotated[bool | None, _plan_option(
    "fp8_params", "fp8/fp4 plans keep the weights in fp8/NVFP4 (Megatron --fp8-param-gather, "
    "--fp4-param-gather)", "--fp8-params/--no-fp8-params")]
OffloadQkvOption = Annotated[bool | None, _plan_option(
    "offload_qkv", "full recompute keeps the Q/K/V projections in host memory (MaxText qkv_proj_offloaded)",
    "--offload-qkv/--no-offload-qkv")]
OffloadLayersOption = Annotated[int | None, _plan_option(
    "offload_layers", "layers whose activations go to host memory (Megatron --cpu-offloading-num-layers; pp=1)")]
OffloadModulesOption = Annotated[str | None, _plan_option(
    "offload_modules", "submodules whose inputs go to host memory: attn_norm, qkv_linear, core_attn, attn_proj, "
    "mlp_norm, expert_fc1, moe_act (comma-separated; Megatron --offload-modules)")]
FusedCrossEntropyOption = Annotated[bool | None, _plan_option(
    "fused_cross_entropy", "cross-entropy in place on the bf16 logits (TE parallel_cross_entropy)",
    "--fused-cross-entropy/--no-fused-cross-entropy")]
LossChunksOption = Annotated[int | None, _plan_option(
    "loss_chunks", "logits and loss computed this many token chunks at a time (MaxText num_vocab_tiling)")]
FirstStageLayersOption = Annotated[int | None, _plan_option(
    "first_stage_layers", "layers on the first pipeline stage (uneven split)", default="balanced")]
LastStageLayersOption = Annotated[int | None, _plan_option(
    "last_stage_layers", "layers on the last pipeline stage (uneven split)", default="balanced")]
PlanFileOption = Annotated[Path | None, typer.Option(
    "--plan", metavar="FILE.yaml", help="Plan fields in YAML (options given on the line override them)")]


def given_plan_options(values: dict[str, Any]) -> dict[str, Any]:
    """The Plan fields given on the command line, from a command's ``locals()`` (``seq`` is
    ``seq_len``); an option left out is None and not listed."""
    given = {}
    for name, value in values.items():
        field = "seq_len" if name == "seq" else name
        if field in Plan.model_fields and value is not None:
            given[field] = value
    if isinstance(given.get("recompute_modules"), str):
        given["recompute_modules"] = csv_items(given["recompute_modules"], "--recompute-modules")
    if isinstance(given.get("offload_modules"), str):
        given["offload_modules"] = csv_items(given["offload_modules"], "--offload-modules")
    return given


def spec_file(path: Path | None, spec_type: type[Spec], option: str,
              extra: tuple[str, ...] = ()) -> tuple[dict[str, Any], dict[str, str]]:
    """The fields of a YAML file of ``spec_type`` fields (``--plan``, ``--deployment``), and
    the name each is refused under (``plan.yaml:zero``); unknown fields are refused, except the
    ``extra`` keys the command also takes from the file (returned as they are)."""
    if path is None:
        return {}, {}
    data = read_yaml(path, option)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpecError(option, str(path), f"expected a mapping of {spec_type.__name__} fields")
    known = [*spec_type.model_fields, *extra]
    for key, value in data.items():
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"; did you mean {close[0]}?" if close else f" (known: {', '.join(known)})"
            raise SpecError(f"{path.name}:{key}", value, f"unknown {spec_type.__name__} field{hint}")
    options = dict(data)
    for key, value in options.items():
        if key in extra:
            continue
        if isinstance(value, str) and get_origin(spec_type.model_fields[key].annotation) is tuple:
            options[key] = csv_items(value, f"{path.name}:{key}")  # a list written as a comma string
    return options, {key: f"{path.name}:{key}" for key in options}


def merged_options(path: Path | None, given: dict[str, Any], spec_type: type[Spec] = Plan,
                   option: str = "--plan") -> tuple[dict[str, Any], dict[str, str]]:
    """The file's fields overridden by the options given explicitly, and where each came from
    (the file's ``name:field``; a flag otherwise)."""
    from_file, origins = spec_file(path, spec_type, option)
    for key in given:
        origins.pop(key, None)
    return {**from_file, **given}, origins


def plan_options(options: dict[str, Any], origins: dict[str, str]) -> Any:
    """The Plan fields of the options and a ``--plan`` file as the API's PlanOptions; a value of
    the wrong type (a string in the file where a number goes) is refused under its name."""
    from clusterplan.api._base import PlanOptions

    try:
        return PlanOptions(**options)
    except ValidationError as error:
        first = error.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "plan"
        raise SpecError(origins.get(field, flag(field)), first.get("input"), str(first["msg"])) from None


def _print_paths(what: str, *paths: str) -> None:
    """Files written, one per line and never broken (a path is copied whole from a log)."""
    console.print(f"{what}:", highlight=False)
    for path in paths:
        console.print(f"  {path}", soft_wrap=True, highlight=False, markup=False)

