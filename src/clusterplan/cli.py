"""Command-line interface (typer + rich): human units at the edge, SI inside.

Every refusal is one line on stderr naming the field, the value and the rule, with exit code 2.
"""

from __future__ import annotations

import difflib
import os
import stat
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ParamSpec, TypeVar, get_origin

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from clusterplan import units
from clusterplan.api._edge import (
    MAX_SIMULATED_REQUESTS,
    SEARCH_AXES,
    csv_items,
    does_not_fit,
    flag,
    json_text,
)
from clusterplan.catalog import (
    chip_names,
    load_chip,
    load_model,
    load_system,
    model_names,
    system_names,
)
from clusterplan.catalog.loader import read_yaml, validation_message
from clusterplan.errors import MAX_VALUE_CHARS, NoAnswerError, SpecError, shorten, show
from clusterplan.report.console import ReportConsole, StepProgress
from clusterplan.specs import Plan
from clusterplan.specs._base import Spec
from clusterplan.training.batch import DEFAULT_ROUTING_GINI

if TYPE_CHECKING:
    from clusterplan.specs.accuracy import CrossValSummary

app = typer.Typer(
    help="clusterplan: plan and simulate AI supercomputers from public specifications.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,  # plain help: option names stay whole at 80 columns
)
#: stdout: tables and text (the width rule and the table rule of report/console.py)
console: Console = ReportConsole()
P = ParamSpec("P")
R = TypeVar("R")
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
    "routing_gini", "MoE: Gini of per-expert token load (0 = balanced)", default=str(DEFAULT_ROUTING_GINI))]
OverlapEpOption = Annotated[bool | None, _plan_option(
    "overlap_ep", "MoE: overlap EP all-to-alls (DualPipe-style)", "--overlap-ep/--no-overlap-ep")]
EpWithinScaleUpOption = Annotated[bool | None, _plan_option(
    "ep_within_scale_up", "require EP x ETP inside one scale-up domain", "--ep-within-scale-up")]
MtpOption = Annotated[int | None, _plan_option("mtp", "multi-token-prediction depth (DeepSeek-V3: 1)")]
MicroBatchOption = Annotated[int | None, _plan_option("micro_batch", "micro-batch (sequences)")]
SeqOption = Annotated[int | None, typer.Option("--seq", help="sequence length (tokens); or seq_len in --plan")]
GlobalBatchOption = Annotated[int | None, typer.Option(
    help="global batch (sequences per step); or global_batch in --plan")]
RecomputeOption = Annotated[str | None, _plan_option("recompute", "none | selective | full")]
RecomputeModulesOption = Annotated[str | None, _plan_option(
    "recompute_modules", "what selective recompute re-runs: core_attn, layernorm, moe_act, elementwise "
    "(comma-separated; Megatron --recompute-modules)")]
SpOption = Annotated[bool | None, _plan_option("sp", "sequence parallelism", "--sp/--no-sp",
                                               default="on when tp > 1")]
ZeroOption = Annotated[int | None, _plan_option("zero", "ZeRO stage 0-3 (1 = distributed optimizer)")]
DpShardOption = Annotated[int | None, _plan_option(
    "dp_shard", "ZeRO sharding group (HSDP): shard over this many of the dp*cp replicas", default="dp*cp")]
PrecisionOption = Annotated[str | None, _plan_option("precision", "bf16 | fp8 | fp4 matmuls")]
GradReduceOption = Annotated[str | None, _plan_option(
    "grad_reduce", "gradient reduction dtype: fp32 | bf16 (any 16-bit reduction)")]
OverlapDpOption = Annotated[bool | None, _plan_option(
    "overlap_dp", "overlap DP reduction with backward", "--overlap-dp/--no-overlap-dp")]
OverlapTpOption = Annotated[bool | None, _plan_option(
    "overlap_tp", "overlap TP comm with GEMMs", "--overlap-tp/--no-overlap-tp")]
OverlapPpOption = Annotated[bool | None, _plan_option(
    "overlap_pp", "overlap pipeline sends with compute", "--overlap-pp/--no-overlap-pp")]
FlashAttentionOption = Annotated[bool | None, _plan_option(
    "flash_attention", "fused attention (no s x s scores kept)", "--flash-attention/--no-flash-attention")]
Fp8ParamsOption = Annotated[bool | None, _plan_option(
    "fp8_params", "fp8 plans keep the weights in fp8 (Megatron --fp8-param-gather)", "--fp8-params/--no-fp8-params")]
OffloadQkvOption = Annotated[bool | None, _plan_option(
    "offload_qkv", "full recompute keeps the Q/K/V projections in host memory (MaxText qkv_proj_offloaded)",
    "--offload-qkv/--no-offload-qkv")]
OffloadLayersOption = Annotated[int | None, _plan_option(
    "offload_layers", "layers whose activations go to host memory (Megatron --cpu-offloading-num-layers; pp=1)")]
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
    return given


def spec_file(path: Path | None, spec_type: type[Spec], option: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The fields of a YAML file of ``spec_type`` fields (``--plan``, ``--deployment``), and
    the name each is refused under (``plan.yaml:zero``); unknown fields are refused."""
    if path is None:
        return {}, {}
    data = read_yaml(path, option)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpecError(option, str(path), f"expected a mapping of {spec_type.__name__} fields")
    known = list(spec_type.model_fields)
    for key, value in data.items():
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"; did you mean {close[0]}?" if close else f" (known: {', '.join(known)})"
            raise SpecError(f"{path.name}:{key}", value, f"unknown {spec_type.__name__} field{hint}")
    options = dict(data)
    for key, value in options.items():
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


# ---- train ---------------------------------------------------------------------------------
@app.command()
@clean_errors
def train(
    model: Annotated[str, typer.Option(help="catalog model name or path to a model YAML")],
    system: Annotated[str, typer.Option(help="catalog system name or path to a system YAML")],
    chips: Annotated[int, typer.Option(help="chips in the job")],
    seq: SeqOption = None,
    global_batch: GlobalBatchOption = None,
    plan_file: PlanFileOption = None,
    tp: TpOption = None,
    pp: PpOption = None,
    vp: VpOption = None,
    cp: CpOption = None,
    dp: DpOption = None,
    ep: EpOption = None,
    etp: EtpOption = None,
    capacity_factor: CapacityFactorOption = None,
    routing_gini: RoutingGiniOption = None,
    overlap_ep: OverlapEpOption = None,
    mtp: MtpOption = None,
    ep_within_scale_up: EpWithinScaleUpOption = None,
    micro_batch: MicroBatchOption = None,
    recompute: RecomputeOption = None,
    recompute_modules: RecomputeModulesOption = None,
    sp: SpOption = None,
    zero: ZeroOption = None,
    dp_shard: DpShardOption = None,
    precision: PrecisionOption = None,
    grad_reduce: GradReduceOption = None,
    overlap_tp: OverlapTpOption = None,
    overlap_dp: OverlapDpOption = None,
    overlap_pp: OverlapPpOption = None,
    flash_attention: FlashAttentionOption = None,
    fp8_params: Fp8ParamsOption = None,
    offload_layers: OffloadLayersOption = None,
    offload_qkv: OffloadQkvOption = None,
    fused_cross_entropy: FusedCrossEntropyOption = None,
    loss_chunks: LossChunksOption = None,
    first_stage_layers: FirstStageLayersOption = None,
    last_stage_layers: LastStageLayersOption = None,
    tokens: Annotated[str | None, typer.Option(help="training tokens, e.g. 15T, for time to train")] = None,
    chip: Annotated[str | None, typer.Option(help="override the system's chip (name or YAML)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Estimate one training step (time, breakdown, memory) and the time to train. Settings
    left open are listed with what changing them would do (JSON: assumed)."""
    from clusterplan.api.train import TrainRequest
    from clusterplan.api.train import answer as train_answer
    from clusterplan.report.tables import memory_table, train_table

    options, origins = merged_options(plan_file, given_plan_options(locals()))
    request = TrainRequest(model=model, system=system, chips=chips, plan=plan_options(options, origins),
                           tokens=tokens, chip=chip, origins=origins)
    record = train_answer(request).record
    if not record["fits_memory"]:
        # A valid question answered no: the figures are those of a plan that cannot run.
        if as_json:
            emit_json(record)
        else:
            memory_table(console, record)
        raise NoAnswerError("--chips", chips, does_not_fit(record))
    if as_json:
        emit_json(record)
    else:
        train_table(console, record)


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


# ---- catalog -------------------------------------------------------------------------------
@app.command()
@clean_errors
def catalog(
    kind: Annotated[str, typer.Argument(help="chips | systems | models | economics")],
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """List catalog entries with their key figures (economics: every price and money
    assumption with its kind, published / estimate / assumption, and its source)."""
    from clusterplan.report.tables import catalog_rows

    if kind == "economics":
        _catalog_economics(as_json)
        return
    if kind not in ("chips", "systems", "models"):
        raise SpecError("kind", kind, "must be one of chips, systems, models, economics")
    loaders = {"chips": (chip_names, load_chip), "systems": (system_names, load_system),
               "models": (model_names, load_model)}
    names, loader = loaders[kind]
    specs = [loader(name) for name in names()]
    header, rows, records = catalog_rows(kind, specs)
    if as_json:
        emit_json({kind: records})
        return
    shown = list(range(len(header)))
    if kind == "models" and console.width < 100:  # narrow: the columns that identify a model
        shown = [i for i, column in enumerate(header) if column not in ("ffn", "vocab")]
    if kind == "chips" and console.width < 100:  # narrow: names and figures whole, family in --json
        shown = [i for i, column in enumerate(header) if column != "family"]
    table = Table(title=f"clusterplan catalog: {kind}")
    for index in shown:
        # Names stay whole (greppable at any terminal width); number columns never break.
        table.add_column(header[index], no_wrap=index == 0 or header[index] == "family")
    for row in rows:
        table.add_row(*(row[index] for index in shown))
    console.print(table)
    if len(shown) < len(header):
        console.print(f"[dim]{', '.join(c for i, c in enumerate(header) if i not in shown)}: "
                      "at 100 columns or more, or --json[/]")


def _catalog_economics(as_json: bool) -> None:
    """catalog/economics.yaml: each number, its kind and its source."""
    from clusterplan.catalog import load_economics
    from clusterplan.costs.money import economics_records

    records = economics_records(load_economics())
    if as_json:
        emit_json(records)
        return
    table = Table(title="clusterplan catalog: economics")
    for column in ("name", "value", "kind", "source"):
        table.add_column(column, overflow="fold", no_wrap=column == "name")
    for record in records:
        value = record["value"]
        table.add_row(record["name"], value if isinstance(value, str) else f"{value:,.4g}", record["kind"],
                      record["source"])
    console.print(table)


# ---- validate ------------------------------------------------------------------------------
@app.command()
@clean_errors
def validate(
    table: Annotated[list[str] | None, typer.Option("--table", help="limit to these tables")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    show_skipped: Annotated[bool, typer.Option("--skipped/--no-skipped", help="list rows not modelled")] = True,
    markdown: Annotated[bool, typer.Option("--markdown", help="print the report as Markdown")] = False,
    cross_validate: Annotated[bool, typer.Option(
        "--cross-validate", help="refit with each table, and each chip family, left out (minutes)")] = False,
    workers: Annotated[int | None, typer.Option(help="processes for --cross-validate (default: all cores)")] = None,
) -> None:
    """Predict every published row with its own plan; print errors and MAPE per table, out of
    sample first (stored by the last `calibrate`, or recomputed with --cross-validate)."""
    from clusterplan.catalog.loader import load_crossval
    from clusterplan.report.tables import validation_report
    from clusterplan.validation.harness import run
    from clusterplan.validation.registry import all_cases, known_tables

    tables = known_tables()
    for name in table or []:
        if name not in tables:
            raise SpecError("--table", name, f"unknown table (known: {', '.join(tables)})")
    if workers is not None and workers < 1:
        raise SpecError("--workers", workers, "must be >= 1")
    results = []
    with StepProgress("validate") as bar:
        for name in table or tables:
            bar.step(f"predicting the rows of {name}")
            results += run(all_cases([name]))
    crossval: CrossValSummary | None
    if cross_validate:
        crossval = _cross_validate(table, workers)
        origin = "computed now (--cross-validate)"
    else:
        crossval = load_crossval()
        origin = "stored by the last `clusterplan calibrate` (recompute: --cross-validate)"
    if markdown:
        from clusterplan.report.tables import validation_markdown

        sys.stdout.write(validation_markdown(results, crossval))
        return
    validation_report(console, results, as_json=as_json, show_skipped=show_skipped, emit=emit_json,
                      crossval=crossval, crossval_origin=origin)


def _cross_validate(tables: list[str] | None, workers: int | None) -> CrossValSummary:
    """Every cross-validation fold, with progress on stderr."""
    from clusterplan.distributed import LocalExecutor
    from clusterplan.validation.crossval import cross_validate, folds, summarise
    from clusterplan.validation.registry import all_cases

    total = len(folds(all_cases(tables)))
    with StepProgress("cross-validation") as bar:
        bar.step(f"refitting with each of {total} folds left out")

        def done(fold: Any) -> None:
            bar.step(f"refitted without {fold.name or 'nothing'} ({bar.steps}/{total})")

        return summarise(cross_validate(tables, LocalExecutor(workers), on_fold=done))


# ---- search --------------------------------------------------------------------------------
@app.command()
@clean_errors
def search(
    model: Annotated[str, typer.Option(help="catalog model name or path to a model YAML")],
    system: Annotated[str, typer.Option(help="catalog system name or path to a system YAML")],
    chips: Annotated[int | None, typer.Option(
        help="chips in the job (or the most it may use, with --up-to); or give --max-chips")] = None,
    seq: SeqOption = None,
    global_batch: GlobalBatchOption = None,
    deadline: Annotated[str | None, typer.Option(
        help="train --tokens within this time, e.g. 90d (units h, d, w, y)")] = None,
    budget: Annotated[str | None, typer.Option(
        help="the run costs at most this many US dollars, e.g. 50M (k, M, B)")] = None,
    max_chips: Annotated[int | None, typer.Option(
        help="use at most this many chips (any count up to it without --chips)")] = None,
    any_shape: Annotated[bool, typer.Option(
        "--any-shape", help="any chip count and TP (default: whole scale-up domains, TP dividing "
        "one)")] = False,
    plan_file: Annotated[Path | None, typer.Option(
        "--plan", metavar="FILE.yaml",
        help="Plan fields every plan shares (flash_attention, overlaps, grad_reduce, ...) and single "
        "precision/recompute/zero values; options given override them")] = None,
    precision: Annotated[str | None, typer.Option(
        help="matmul precisions to consider, e.g. bf16,fp8 (default: bf16)")] = None,
    recompute: Annotated[str | None, typer.Option(
        help="recompute levels to consider (default: none,selective,full)")] = None,
    zero: Annotated[str | None, typer.Option(help="ZeRO stages to consider (default: 0,1,2,3)")] = None,
    objective: Annotated[str, typer.Option(help="time | cost (chip-hours) | energy (chip-hours x TDP)")] = "time",
    max_memory_fraction: Annotated[float, typer.Option(help="usable fraction of HBM")] = 0.9,
    top: Annotated[int, typer.Option(help="how many plans to list")] = 10,
    up_to: Annotated[bool, typer.Option("--up-to/--exact", help="use at most --chips (any count) or exactly")] = False,
    flash_attention: FlashAttentionOption = None,
    fp8_params: Fp8ParamsOption = None,
    offload_layers: OffloadLayersOption = None,
    offload_qkv: OffloadQkvOption = None,
    fused_cross_entropy: FusedCrossEntropyOption = None,
    loss_chunks: LossChunksOption = None,
    overlap_tp: OverlapTpOption = None,
    overlap_dp: OverlapDpOption = None,
    overlap_pp: OverlapPpOption = None,
    grad_reduce: GradReduceOption = None,
    recompute_modules: RecomputeModulesOption = None,
    routing_gini: RoutingGiniOption = None,
    capacity_factor: CapacityFactorOption = None,
    overlap_ep: OverlapEpOption = None,
    mtp: MtpOption = None,
    max_tp: Annotated[int, typer.Option(help="largest TP degree to consider")] = 64,
    max_cp: Annotated[int, typer.Option(help="largest CP degree to consider")] = 32,
    max_micro_batch: Annotated[int, typer.Option(help="largest micro-batch to consider")] = 16,
    tokens: Annotated[str | None, typer.Option(help="training tokens, e.g. 15T, for time to train")] = None,
    chip: Annotated[str | None, typer.Option(help="override the system's chip (name or YAML)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Search every valid plan; print the best ones, ranked, with why the others lose, and the
    train command that reruns the first. With --deadline, --budget or --max-chips only plans
    meeting them are ranked (exit 1 with the reason when none does)."""
    from clusterplan.api.search import SearchRequest
    from clusterplan.api.search import answer as search_answer
    from clusterplan.report.tables import search_table

    given = given_plan_options(locals())
    axes = {name: given.pop(name) for name in SEARCH_AXES if name in given}  # comma-separated lists
    options, origins = merged_options(plan_file, given)
    request = SearchRequest(
        model=model, system=system, chips=chips, plan=plan_options(options, origins), deadline=deadline,
        budget=budget, max_chips=max_chips, any_shape=any_shape, objective=objective,
        max_memory_fraction=max_memory_fraction, top=top, up_to=up_to, max_tp=max_tp, max_cp=max_cp,
        max_micro_batch=max_micro_batch, tokens=tokens, chip=chip, origins=origins, **axes)
    result = search_answer(request)
    if result.unmet:  # plans fit, none meets the constraints: a finding, not bad input
        if as_json:
            emit_json(result.record)
        typer.echo(result.unmet, err=True)
        raise typer.Exit(code=1)
    if as_json:
        emit_json(result.record)
    else:
        search_table(console, result.result)


# ---- sweep ---------------------------------------------------------------------------------
def _sweep_plan(row: dict[str, Any]) -> str:
    """The best plan of a sweep row in one short string (``TP4 PP1 DP16 mb1 none Z3 bf16``)."""
    if row["status"] != "ok":
        return "[red]no plan fits[/]"
    parts = [f"TP{row['tp']}", f"PP{row['pp']}"] + [f"{name.upper()}{row[name]}" for name in ("vp", "cp")
                                                     if row[name] > 1]
    parts += [f"DP{row['dp']}"] + ([f"EP{row['ep']}"] if row["ep"] > 1 else [])
    parts += [f"mb{row['micro_batch']}", row["recompute"], f"Z{row['zero']}", row["precision"]]
    if row["chips_used"] != row["chips"]:
        parts.append(f"on {row['chips_used']:,}")
    return " ".join(parts)


def _sweep_table(out: Console, axes: list[str], rows: list[dict[str, Any]]) -> None:
    """The best plan per sweep point; step, memory and time to train in one unit per column. Below
    120 columns, model and system share a column."""
    from rich.markup import escape

    table = Table(title=f"sweep: best plan per point ({len(rows)} points)")
    merged = out.width < 120
    shown = [*([] if merged else ["model", "system"]), "chips",
             *[name for name in axes if name not in ("model", "system", "chips")]]
    tokens = "time_to_train_s" in rows[0] if rows else False
    labels = {"seq_len": "seq", "global_batch": "batch", "precision_options": "precisions",
              "recompute_options": "recompute", "zero_options": "ZeRO", "max_micro_batch": "max mb"}
    ok_rows = [row["status"] == "ok" for row in rows]
    step_unit, steps = units.format_column([r["step_time_s"] if ok else None for r, ok in zip(rows, ok_rows,
                                                                                            strict=True)], "duration")
    _, memory = units.format_column([r["memory_bytes_per_chip"] if ok else None for r, ok in zip(rows, ok_rows,
                                                                                                strict=True)],
                                    "bytes", prefix="Gi")
    train_unit, train = units.format_column([r.get("time_to_train_s") if ok else None
                                             for r, ok in zip(rows, ok_rows, strict=True)], "duration")
    headers = ["#", *(["model on system"] if merged else []), *[labels.get(n, n) for n in shown], "best plan",
               f"step {step_unit}", "MFU", "memory GiB", *([f"to train {train_unit}"] if tokens else [])]
    for header in headers:
        table.add_column(header)
    for index, row in enumerate(rows):
        ok = ok_rows[index]
        cells = [str(row["point"]), *([escape(f"{row['model']} on {row['system']}")] if merged else []),
                 *[f"{row[n]:,}" if isinstance(row[n], int) and not isinstance(row[n], bool)
                   else escape(str(row[n])) for n in shown], _sweep_plan(row), steps[index],
                 f"{100 * row['mfu']:.1f} %" if ok else "-", memory[index]]
        if tokens:
            cells.append(train[index])
        table.add_row(*cells)
    out.print(table)


#: Most points a sweep may have unless --max-points raises it: each point is a plan search, and
#: the validated points (about 2 kB each) are all held in memory before the first one runs.
DEFAULT_MAX_POINTS = 100_000


@app.command()
@clean_errors
def sweep(
    sweep_file: Annotated[Path, typer.Argument(metavar="FILE.yaml", help="sweep file (see docs/sweep.md)")],
    output: Annotated[
        Path | None, typer.Option(help="Parquet file to write (default: <stem>.parquet next to the sweep file)")
    ] = None,
    executor: Annotated[str, typer.Option(help="local (process pool on this machine) | ray")] = "local",
    ray_address: Annotated[
        str | None, typer.Option(help="Ray cluster to join (default: start a local Ray instance)")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="local: worker processes; ray: CPUs of the local instance (default: all)")
    ] = None,
    max_points: Annotated[int, typer.Option(
        help="refuse a sweep of more points than this (its axes' product)")] = DEFAULT_MAX_POINTS,
    as_json: Annotated[bool, typer.Option("--json", help="print the rows as JSON")] = False,
) -> None:
    """Search every point of a sweep file; write one row per point to Parquet and summarise."""
    from rich.markup import escape
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from clusterplan.distributed import make_executor
    from clusterplan.sweep import load_sweep, run_sweep, write_parquet

    if max_points < 1:
        raise SpecError("--max-points", max_points, "must be >= 1")
    runner = make_executor(executor, ray_address, workers)
    plan = load_sweep(sweep_file, max_points=max_points)  # every point validated before anything runs
    target = output_file(output if output is not None else sweep_file.with_suffix(".parquet"), "--output")
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                        console=Console(stderr=True), transient=True)
    with runner:
        runner.start()  # a Ray cluster joined (or refused) before the progress bar shows
        with progress:
            task = progress.add_task(escape(f"sweep on {runner.describe()}"), total=len(plan.points))
            rows = run_sweep(plan, runner, on_result=lambda _index, _row: progress.advance(task))
    write_or_refuse("--output", target, lambda: write_parquet(rows, target))
    if as_json:
        emit_json({"sweep": str(sweep_file), "output": str(target), "plans": rows})
        return
    _sweep_table(console, plan.varying_axes(), rows)
    _print_paths(f"wrote {len(rows)} rows to", str(target))


# ---- fleet ---------------------------------------------------------------------------------
@app.command()
@clean_errors
def fleet(
    scenario: Annotated[
        str, typer.Argument(help="built-in scenario (amazon-2025, amazon-2026, hyperscalers-2025, rainier) or YAML")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="print JSON: the scenario, a record per quarter")] = False,
    report_dir: Annotated[
        Path | None, typer.Option(help="write fleet-<name>.md and .html with charts here")
    ] = None,
    runs: Annotated[bool, typer.Option("--runs/--no-runs", help="search the reference run each quarter")] = True,
) -> None:
    """Capex per quarter and hardware mix -> chips, MW, EFLOP/s, capex, depreciation over time."""
    from clusterplan.api.fleet import FleetRequest
    from clusterplan.api.fleet import answer as fleet_answer
    from clusterplan.report.fleet import backtest_table, fleet_report, fleet_table

    if report_dir is not None:
        output_dir(report_dir, "--report-dir")
    with StepProgress("fleet") as bar:
        result = fleet_answer(FleetRequest(scenario=scenario, runs=runs), progress=bar.step)
        name, records = result.scenario, result.record["quarters"]
        if report_dir is not None:
            output_dir(report_dir, "--report-dir", (f"fleet-{name}.md", f"fleet-{name}.html"))
            bar.step("writing the report")
        written = (write_or_refuse("--report-dir", report_dir, lambda: fleet_report(name, records, report_dir))
                   if report_dir is not None else {})
    if as_json:
        emit_json({**result.record, **({"report": written} if written else {})})
        return
    fleet_table(console, name, records)
    if "backtest" in result.record:
        backtest_table(console, result.record["backtest"])
    if written:
        _print_paths("report", written["html"], written["markdown"])


# ---- campus --------------------------------------------------------------------------------
@app.command()
@clean_errors
def campus(
    scenario: Annotated[str, typer.Argument(help="built-in scenario (rainier) or YAML")] = "rainier",
    days: Annotated[int, typer.Option(help="days to simulate hour by hour (1 to 3660)")] = 7,
    policy: Annotated[str, typer.Option(help="shared, dedicated, slo-aware or all")] = "all",
    as_json: Annotated[bool, typer.Option("--json", help="print JSON: hourly, daily, summary, policies")] = False,
    report_dir: Annotated[
        Path | None, typer.Option(help="write campus-<name>.md and .html with charts here")
    ] = None,
) -> None:
    """The campus hour by hour: serving by day, training by night, power and money by the hour,
    under each allocation policy side by side (docs/campus.md)."""
    from clusterplan.api.campus import CampusRequest
    from clusterplan.api.campus import answer as campus_answer
    from clusterplan.campus.output import campus_report, campus_table

    request = CampusRequest(scenario=scenario, days=days, policy=policy)
    if report_dir is not None:
        output_dir(report_dir, "--report-dir")
    with StepProgress("campus") as bar:
        answered = campus_answer(request, progress=bar.step)
        result = answered.result
        if report_dir is not None:
            output_dir(report_dir, "--report-dir", (f"campus-{result.scenario}.md", f"campus-{result.scenario}.html"))
            bar.step("writing the report")
        written = (write_or_refuse("--report-dir", report_dir, lambda: campus_report(result, report_dir))
                   if report_dir is not None else {})
    if as_json:
        emit_json({**answered.record, **({"report": written} if written else {})})
        return
    campus_table(console, result)
    if written:
        _print_paths("report", written["html"], written["markdown"])


# ---- reliability ---------------------------------------------------------------------------
@app.command()
@clean_errors
def reliability(
    model: Annotated[str, typer.Option(help="catalog model name or path to a model YAML")],
    system: Annotated[str, typer.Option(help="catalog system name or path to a system YAML")],
    chips: Annotated[int, typer.Option(help="chips in the job")],
    seq: SeqOption = None,
    global_batch: GlobalBatchOption = None,
    plan_file: PlanFileOption = None,
    tp: TpOption = None,
    pp: PpOption = None,
    vp: VpOption = None,
    cp: CpOption = None,
    dp: DpOption = None,
    ep: EpOption = None,
    etp: EtpOption = None,
    capacity_factor: CapacityFactorOption = None,
    routing_gini: RoutingGiniOption = None,
    overlap_ep: OverlapEpOption = None,
    mtp: MtpOption = None,
    ep_within_scale_up: EpWithinScaleUpOption = None,
    micro_batch: MicroBatchOption = None,
    recompute: RecomputeOption = None,
    recompute_modules: RecomputeModulesOption = None,
    sp: SpOption = None,
    zero: ZeroOption = None,
    dp_shard: DpShardOption = None,
    precision: PrecisionOption = None,
    grad_reduce: GradReduceOption = None,
    overlap_tp: OverlapTpOption = None,
    overlap_dp: OverlapDpOption = None,
    overlap_pp: OverlapPpOption = None,
    flash_attention: FlashAttentionOption = None,
    fp8_params: Fp8ParamsOption = None,
    offload_layers: OffloadLayersOption = None,
    offload_qkv: OffloadQkvOption = None,
    fused_cross_entropy: FusedCrossEntropyOption = None,
    loss_chunks: LossChunksOption = None,
    first_stage_layers: FirstStageLayersOption = None,
    last_stage_layers: LastStageLayersOption = None,
    tokens: Annotated[str | None, typer.Option(help="training tokens, e.g. 15T")] = None,
    duration: Annotated[str | None, typer.Option(help="a period instead of a token budget, e.g. 54d")] = None,
    checkpoint_interval: Annotated[str, typer.Option(
        help="auto (the optimum, never below what a checkpoint needs) or a duration, e.g. 30min")] = "auto",
    checkpoint: Annotated[str, typer.Option(
        help="sync (blocking write) | async (copy to host, write in the background) | memory "
             "(copies in peers' host memory, persisted every --persist-interval)")] = "sync",
    recovery: Annotated[str, typer.Option(
        help="spares (hot spares swap in) | wait (for a repair) | elastic (= wait --elastic)")] = "spares",
    elastic: Annotated[bool, typer.Option(
        "--elastic/--no-elastic", help="the other replicas go on while a failed node is replaced")] = False,
    fold: Annotated[bool, typer.Option(
        "--fold/--no-fold", help="failures during an outage fold into it (--no-fold: each adds its own)")] = True,
    restart: Annotated[str | None, typer.Option(help="override the restart time, e.g. 30s")] = None,
    detection: Annotated[str | None, typer.Option(help="override the detection time, e.g. 10s")] = None,
    swap: Annotated[str | None, typer.Option(help="override a hot spare's swap-in time, e.g. 1min")] = None,
    elastic_pause: Annotated[str | None, typer.Option(help="override the elastic regroup pause, e.g. 10s")] = None,
    persist_interval: Annotated[str | None, typer.Option(
        help="memory checkpoints: persist to storage this often, e.g. 1h")] = None,
    failure_scale: Annotated[float, typer.Option(help="multiply every failure rate")] = 1.0,
    storage_bandwidth: Annotated[str | None, typer.Option(help="checkpoint storage, e.g. 2TB/s")] = None,
    trials: Annotated[int, typer.Option(help="Monte Carlo trials (0 = closed form only)")] = 0,
    seed: Annotated[int, typer.Option(help="Monte Carlo seed")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Failures, checkpoints and goodput of a training job (closed form, optional Monte Carlo).
    The plan takes every train option (--seq 8192 and --global-batch 2048 unless given)."""
    from clusterplan.api.reliability import ReliabilityRequest
    from clusterplan.api.reliability import answer as reliability_answer
    from clusterplan.report.tables import memory_table, reliability_table

    if (tokens is None) == (duration is None):
        raise SpecError("--tokens", tokens, "give exactly one of --tokens or --duration")
    options, origins = merged_options(plan_file, given_plan_options(locals()))
    request = ReliabilityRequest(
        model=model, system=system, chips=chips, plan=plan_options(options, origins), tokens=tokens,
        duration_s=duration, checkpoint_interval_s=checkpoint_interval, checkpoint=checkpoint, recovery=recovery,
        elastic=elastic, fold=fold, restart_s=restart, detection_s=detection, swap_s=swap,
        elastic_pause_s=elastic_pause, persist_interval_s=persist_interval, failure_scale=failure_scale,
        storage_bandwidth_bytes_per_s=storage_bandwidth, trials=trials, seed=seed, origins=origins)
    answered = reliability_answer(request, tokens)
    if answered.memory_record is not None:  # the failures of a job that cannot run: answered no
        if as_json:
            emit_json(answered.memory_record)
        else:
            memory_table(console, answered.memory_record)
        raise NoAnswerError("--chips", chips, does_not_fit(answered.memory_record))
    record = answered.record
    if as_json:
        emit_json(record)
    else:
        reliability_table(console, record)


# ---- capacity ------------------------------------------------------------------------------
@app.command()
@clean_errors
def capacity(
    model: Annotated[str, typer.Option(help="catalog model name or path to a model YAML")],
    system: Annotated[str, typer.Option(help="catalog system name or path to a system YAML")],
    demand: Annotated[str, typer.Option(help="output tokens/s to serve, e.g. 5e6tok/s or 5M")],
    slo_ttft: Annotated[str, typer.Option(help="p99 time-to-first-token target, e.g. 2s (bare number: ms)")],
    slo_tpot: Annotated[str, typer.Option(help="p99 time-per-output-token target, e.g. 100ms (bare: ms)")],
    input_tokens: Annotated[int, typer.Option(help="prompt tokens per request (mean)")] = 1000,
    output_tokens: Annotated[int, typer.Option(help="generated tokens per request (mean)")] = 200,
    objective: Annotated[str, typer.Option(help="cost ($/M tokens) | chips | power (facility MW)")] = "cost",
    weights: Annotated[str | None, typer.Option(
        help="weight formats to consider, e.g. bf16,fp8 (fp4 too) (default: bf16,fp8 where the chip has them)")
    ] = None,
    kv_cache: Annotated[str, typer.Option(help="KV-cache formats to consider")] = "bf16,fp8",
    max_chips_per_replica: Annotated[int, typer.Option(help="largest replica (TP x PP chips)")] = 64,
    max_batch: Annotated[int, typer.Option(help="engine limit on batched sequences")] = 2048,
    top: Annotated[int, typer.Option(help="how many deployments to list")] = 5,
    requests: Annotated[int, typer.Option(
        help=f"requests per simulation (at most {MAX_SIMULATED_REQUESTS:,} / --top)")] = 1000,
    length_spread: Annotated[float, typer.Option(help="CV of lognormal request lengths (0 = fixed)")] = 0.0,
    seed: Annotated[int, typer.Option(help="random seed of the simulated workload")] = 0,
    chip: Annotated[str | None, typer.Option(help="override the system's chip (name or YAML)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Search serving deployments (TP, PP, EP, weight and KV formats) for a demand at a p99
    TTFT/TPOT SLO: the best by cost, chips or power, with replicas, chips, MW and $ per M tokens."""
    from rich.progress import Progress

    from clusterplan.api.capacity import CapacityRequest
    from clusterplan.api.capacity import answer as capacity_answer
    from clusterplan.report.tables import capacity_table

    request = CapacityRequest(
        model=model, system=system, demand_output_tokens_per_s=demand, slo_ttft_s=slo_ttft, slo_tpot_s=slo_tpot,
        input_tokens=input_tokens, output_tokens=output_tokens, objective=objective, weights=weights,
        kv_cache=kv_cache, max_chips_per_replica=max_chips_per_replica, max_batch=max_batch, top=top,
        requests=requests, length_spread=length_spread, seed=seed, chip=chip)
    # The bar starts with the first simulation: a refusal before it prints nothing but its line.
    bar = Progress(console=Console(stderr=True), transient=True, disable=as_json)
    task = bar.add_task("simulating deployments at the SLO", total=None)
    started = False

    def advance(done: int, total: int) -> None:
        nonlocal started
        if not started:
            bar.start()
            started = True
        bar.update(task, completed=done, total=total)

    try:
        record = capacity_answer(request, progress=advance).record
    finally:
        if started:
            bar.stop()
    if as_json:
        emit_json(record)
    else:
        capacity_table(console, record)


# ---- calibrate -----------------------------------------------------------------------------
@app.command()
@clean_errors
def calibrate(
    output: Annotated[Path | None, typer.Option(help="write here instead of the catalog's efficiency.yaml")] = None,
    crossval_output: Annotated[Path | None, typer.Option(
        help="write the cross-validated errors here instead of the catalog's crossval.yaml")] = None,
    workers: Annotated[int | None, typer.Option(help="processes for the refits (default: all cores)")] = None,
) -> None:
    """Fit each chip family's kernel efficiencies on its published runs (writes efficiency.yaml)
    and cross-validate the fit (writes crossval.yaml: errors with each table and family left out)."""
    import yaml

    from clusterplan.catalog.loader import CROSSVAL_FILE
    from clusterplan.validation.calibrate import calibrate as fit
    from clusterplan.validation.calibrate import efficiency_yaml
    from clusterplan.validation.registry import all_cases
    from clusterplan.validation.stacks import ALL_FAMILIES

    if workers is not None and workers < 1:
        raise SpecError("--workers", workers, "must be >= 1")
    catalog = Path(__file__).parent / "catalog"
    target = output_file(output or catalog / "efficiency.yaml", "--output")  # before a minute of fitting
    crossval_target = output_file(crossval_output or catalog / CROSSVAL_FILE, "--crossval-output")
    calibration = fit(all_cases())
    with StepProgress("calibrate") as bar:
        for index, family in enumerate(ALL_FAMILIES, start=1):
            bar.step(f"fitting {family} ({index}/{len(ALL_FAMILIES)})")
            calibration.efficiency(family)
    document = efficiency_yaml(calibration)
    summary = _cross_validate(None, workers)
    # Both files are written only once both are computed: nothing half-written.
    header = ("# Physical kernel efficiencies per chip family, written by `clusterplan calibrate`\n"
              "# (MAP fit on the published rows named in fitted_on; see docs/validation.md).\n")
    efficiency_text = header + yaml.safe_dump(document, sort_keys=False, width=100)
    crossval_header = ("# Cross-validated errors of the fit in efficiency.yaml, written by `clusterplan calibrate`:\n"
                       "# each table, and each chip family, left out in turn (see docs/validation.md).\n")
    crossval_text = crossval_header + yaml.safe_dump(summary.model_dump(mode="json"), sort_keys=False, width=100)
    write_or_refuse("--output", target, lambda: write_atomically(target, efficiency_text))
    write_or_refuse("--crossval-output", crossval_target, lambda: write_atomically(crossval_target, crossval_text))
    families: list[dict[str, Any]] = document["families"]  # type: ignore[assignment]
    for entry in families:
        console.print(f"[bold]{entry['family']}[/]: {entry['note']}")
    for name, errors in summary.tables.items():
        console.print(f"{name}: in sample {errors.mape_pct} %, out of sample {errors.mape_out_of_sample_pct} %, "
                      f"family out {errors.mape_family_out_pct} %")
    console.print(f"wrote {target} and {crossval_target}")


def _print_paths(what: str, *paths: str) -> None:
    """Files written, one per line and never broken (a path is copied whole from a log)."""
    console.print(f"{what}:", highlight=False)
    for path in paths:
        console.print(f"  {path}", soft_wrap=True, highlight=False, markup=False)


# ---- rainier -------------------------------------------------------------------------------
@app.command()
@clean_errors
def rainier(
    scenario: Annotated[str, typer.Option(help="scenario name or YAML path")] = "rainier",
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    report_dir: Annotated[
        Path | None, typer.Option(help="write rainier.md and rainier.html with charts here (default: out/)")
    ] = Path("out"),
) -> None:
    """The Project Rainier report: totals, power and money, the training plan the search picks,
    frontier runs and the fleet ramp; also written as Markdown and HTML with charts."""
    from clusterplan.api.rainier import RainierRequest
    from clusterplan.api.rainier import answer as rainier_answer
    from clusterplan.report.rainier import rainier_report, rainier_summary, rainier_table

    if report_dir is not None:
        output_dir(report_dir, "--report-dir", ("rainier.md", "rainier.html"))
    with StepProgress("rainier") as bar:
        record = rainier_answer(RainierRequest(scenario=scenario), progress=bar.step).record
        if report_dir is not None:
            bar.step("writing the report")
        written = (write_or_refuse("--report-dir", report_dir, lambda: rainier_report(record, report_dir))
                   if report_dir is not None else {})
    if written:
        record["report"] = written
    if as_json:
        emit_json(record)
    else:
        rainier_table(console, record)
        rainier_summary(console, record)
        if written:
            _print_paths("report", written["html"], written["markdown"])


# ---- serve ---------------------------------------------------------------------------------
@app.command()
@clean_errors
def serve(
    model: Annotated[str, typer.Option(help="catalog model name or path to a model YAML")],
    system: Annotated[str, typer.Option(help="catalog system name or path to a system YAML")],
    deployment_file: Annotated[Path | None, typer.Option(
        "--deployment", metavar="FILE.yaml",
        help="Deployment fields in YAML (tp, pp, ep, weights, kv_cache, max_batch, kv_memory_fraction, frontend, "
        "buckets); options given on the line override them")] = None,
    tp: Annotated[int | None, typer.Option(help="tensor parallelism of one replica (default: 1)")] = None,
    pp: Annotated[int | None, typer.Option(help="pipeline parallelism of one replica (default: 1)")] = None,
    chips_per_replica: Annotated[
        int | None, typer.Option(help="chips per replica (= TP x PP; alone it sets TP, PP 1)")
    ] = None,
    ep: Annotated[int | None, typer.Option(help="expert parallelism (MoE models) (default: 1)")] = None,
    weights: Annotated[str | None, typer.Option(help="bf16 | fp8 | fp4 weights and matmuls (default: bf16)")] = None,
    kv_cache: Annotated[str | None, typer.Option(help="bf16 | fp8 KV cache (default: bf16)")] = None,
    max_batch: Annotated[int | None, typer.Option(help="engine limit on batched sequences (default: 2048)")] = None,
    kv_memory_fraction: Annotated[float | None, typer.Option(
        help="share of the HBM left after weights and runtime the KV cache may take (default: 0.9)")] = None,
    prefill_buckets: Annotated[str | None, typer.Option(
        help="static-shape engine (AWS Neuron): compiled prompt lengths, e.g. 2048,4096,8192")] = None,
    decode_buckets: Annotated[str | None, typer.Option(
        help="static-shape engine: compiled sequence lengths of token generation, e.g. 4096,8192")] = None,
    frontend: Annotated[str | None, typer.Option(
        help="server: latency behind an API server (fitted request latency added to TTFT); engine: "
             "engine-only benchmark, none added (default: server)")] = None,
    input_tokens: Annotated[int, typer.Option(help="prompt tokens per request (mean)")] = 1000,
    output_tokens: Annotated[int, typer.Option(help="generated tokens per request (mean)")] = 200,
    rate: Annotated[float | None, typer.Option(help="simulate one replica at this many requests/s")] = None,
    trace: Annotated[
        Path | None, typer.Option("--trace", "--workload",
                                  help="replay a trace (CSV or JSON Lines: timestamp,input_tokens,output_tokens)")
    ] = None,
    batch: Annotated[int | None, typer.Option(help="simulate a closed loop of this many concurrent requests")] = None,
    offline: Annotated[bool, typer.Option("--offline", help="simulate every request queued at t = 0")] = False,
    slo_ttft: Annotated[str | None, typer.Option(help="p99 time-to-first-token target, e.g. 2s (bare: ms)")] = None,
    slo_tpot: Annotated[str | None, typer.Option(help="p99 time-per-output-token target, e.g. 100ms")] = None,
    demand: Annotated[str | None, typer.Option(help="output tokens/s to serve, e.g. 2M: replicas, MW, $")] = None,
    requests: Annotated[int, typer.Option(
        help=f"requests per simulation (at most {MAX_SIMULATED_REQUESTS:,})")] = 2000,
    length_spread: Annotated[float, typer.Option(help="CV of lognormal request lengths (0 = fixed)")] = 0.0,
    seed: Annotated[int, typer.Option(help="random seed of the simulated workload")] = 0,
    chip: Annotated[str | None, typer.Option(help="override the system's chip (name or YAML)")] = None,
    scheduler: Annotated[
        str, typer.Option(help="chunked (continuous batching + chunked prefill) | continuous | static | disaggregated")
    ] = "chunked",
    admission: Annotated[str, typer.Option(help="reserve (whole output at admission) | optimistic (preempts)")
                         ] = "reserve",
    replicas: Annotated[int, typer.Option(help="replicas behind a router in the simulated runs")] = 1,
    router: Annotated[str, typer.Option(help="round-robin | least-loaded")] = "round-robin",
    prefill_replicas: Annotated[int | None, typer.Option(help="prefill replicas (--scheduler disaggregated)")] = None,
    decode_replicas: Annotated[int | None, typer.Option(help="decode replicas (--scheduler disaggregated)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Serve a model: one replica's latency and throughput, the request rate it sustains at a
    p99 TTFT/TPOT SLO, and the chips, MW and $ per million tokens a demand needs. Simulated runs
    use --scheduler, --admission and a fleet of --replicas behind --router (or, disaggregated,
    --prefill-replicas and --decode-replicas)."""
    from clusterplan.api.serve import ServeRequest
    from clusterplan.api.serve import answer as serve_answer
    from clusterplan.inference.step import Deployment
    from clusterplan.report.tables import serve_table

    from_file, origins = spec_file(deployment_file, Deployment, "--deployment")
    request = ServeRequest(
        model=model, system=system, tp=tp, pp=pp, ep=ep, chips_per_replica=chips_per_replica, weights=weights,
        kv_cache=kv_cache, max_batch=max_batch, kv_memory_fraction=kv_memory_fraction, frontend=frontend,
        prefill_buckets=prefill_buckets, decode_buckets=decode_buckets, input_tokens=input_tokens,
        output_tokens=output_tokens, rate_per_s=rate, trace=trace, batch=batch, offline=offline,
        slo_ttft_s=slo_ttft, slo_tpot_s=slo_tpot, demand_output_tokens_per_s=demand, requests=requests,
        length_spread=length_spread, seed=seed, chip=chip, scheduler=scheduler, admission=admission,
        replicas=replicas, router=router, prefill_replicas=prefill_replicas, decode_replicas=decode_replicas,
        deployment_file=from_file, origins=origins)
    record = serve_answer(request).record
    if as_json:
        emit_json(record)
    else:
        serve_table(console, record)


# ---- web -----------------------------------------------------------------------------------
@app.command()
@clean_errors
def web(
    host: Annotated[str, typer.Option(help="address to bind (127.0.0.1: this machine only)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8050,
) -> None:
    """The interactive planner in a browser: Training, Serving and Failures pages, and a JSON
    API under /api/ answering what each command's --json prints (docs/web.md)."""
    import uvicorn

    from clusterplan.web.app import create_app

    if not 0 < port < 65536:
        raise SpecError("--port", port, "must be a TCP port, 1 to 65535")
    typer.echo(f"clusterplan web planner on http://{host}:{port}/ (API: /api/, list: /docs); Ctrl-C stops it",
               err=True)
    uvicorn.run(create_app(), host=host, port=port, log_level="warning")


def _value_given(param: Any, argv: list[str]) -> str | None:
    """The value the user typed for an option that failed type conversion, if any."""
    for name in getattr(param, "opts", None) or ():
        for index, token in enumerate(argv):
            if token == name and index + 1 < len(argv):
                return argv[index + 1]
            if token.startswith(name + "="):
                return token[len(name) + 1:]
    return None


def _usage_message(error: Exception, argv: list[str]) -> str:
    """A usage error (bad option type, unknown option) in one line, the value it names shortened."""
    formatter = getattr(error, "format_message", None)
    message = formatter() if callable(formatter) else str(error)
    given = _value_given(getattr(error, "param", None), argv)
    if given is not None:
        message = f"{message} (got {show(given)})"
    for token in sorted(argv, key=len, reverse=True):  # click quotes what it was given, whole
        if len(token) > MAX_VALUE_CHARS and token in message:
            message = message.replace(token, shorten(token))
    return shorten(" ".join(message.split()), 4 * MAX_VALUE_CHARS)


def _aborted() -> None:
    """Ctrl-C: one line and exit code 130; a second Ctrl-C while leaving is ignored."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    error_line("aborted")
    sys.exit(EXIT_ABORTED)


def main(argv: list[str] | None = None) -> None:
    """Entry point: every way a command ends maps to one exit code (README, "Exit codes").

    0 answered; 1 a valid question answered no (one ``error:`` line says why); 2 bad input,
    usage errors included (one ``error:`` line naming the field, the value and the rule);
    130 interrupted by Ctrl-C (``error: aborted``, no traceback from any worker)."""
    args = list(argv) if argv is not None else sys.argv[1:]
    try:
        result = app(args=args, standalone_mode=False)
    except typer.Exit as done:
        sys.exit(done.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        _aborted()
    except typer.TyperException as error:
        if type(error).__name__ == "NoArgsIsHelpError":
            typer.echo(getattr(error, "ctx").get_help())  # noqa: B009
            sys.exit(0)
        error_line(_usage_message(error, args))
        sys.exit(EXIT_BAD_INPUT)
    except (SpecError, ValidationError) as error:  # raised outside a command (an option callback)
        code, message = one_line(error) or (EXIT_BAD_INPUT, str(error))
        error_line(message)
        sys.exit(code)
    if result == EXIT_ABORTED:  # typer turns a KeyboardInterrupt inside a command into exit 130
        _aborted()
    if isinstance(result, int) and result:
        sys.exit(result)
