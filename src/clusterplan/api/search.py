"""Which parallel plan is best for this job? (``clusterplan search``)"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from clusterplan.api._base import Answer, PlanOptions, Request, tokens_field
from clusterplan.api._edge import SEARCH_AXES, SEARCH_SETTINGS, csv_items, flag, search_limits, spec_or_refuse
from clusterplan.catalog import hardware_for, load_chip, load_model, load_system
from clusterplan.errors import NoAnswerError, SpecError
from clusterplan.specs import Plan
from clusterplan.specs.plan import MAX_CHIPS
from clusterplan.training.search import SearchResult


class SearchRequest(Request):
    """Every valid plan of a job, ranked. ``plan`` holds ``seq_len``, ``global_batch`` and the
    settings every plan shares; ``precision``, ``recompute`` and ``zero`` are comma-separated
    lists of values to consider. ``deadline`` and ``budget`` keep the CLI's spelling (``90d``,
    ``50M``): they are checked with ``tokens`` and turned into seconds and dollars."""

    model: str
    system: str
    chips: int | None = Field(None, description="chips in the job (at most, with up_to); or max_chips")
    plan: PlanOptions = PlanOptions()
    deadline: str | None = Field(None, description="train the tokens within this time, e.g. 90d")
    budget: str | None = Field(None, description="US dollars the run may cost, e.g. 50M")
    max_chips: int | None = None
    any_shape: bool = False
    precision: str | None = Field(None, description="precisions to consider, e.g. bf16,fp8")
    recompute: str | None = Field(None, description="recompute levels to consider")
    zero: str | None = Field(None, description="ZeRO stages to consider")
    objective: str = "time"
    max_memory_fraction: float = 0.9
    top: int = 10
    up_to: bool = False
    max_tp: int = 64
    max_cp: int = 32
    max_micro_batch: int = 16
    tokens: float | None = None
    chip: str | None = None
    origins: dict[str, str] = Field(default_factory=dict)

    @field_validator("tokens", mode="before")
    @classmethod
    def tokens_given(cls, value: Any) -> float | None:
        return tokens_field(value)


class SearchAnswer(Answer):
    """The ranked plans (``record``: the ``search --json`` object). ``unmet`` (not empty) says
    why no fitting plan meets the deadline, budget or chip limit; the CLI then exits 1."""

    plans_enumerated: int
    plans_fitting: int
    search_time_s: float
    objective: str
    unmet: str = ""
    best_step_time_s: float | None = None
    best_chips: int | None = None
    #: The search's own result (ranked records, constraints): what the tables print.
    result: SearchResult


def answer(request: SearchRequest) -> SearchAnswer:
    """Search; no plan fitting in memory is a NoAnswerError (exit code 1) saying what may help."""
    from clusterplan.training.command import TrainTarget
    from clusterplan.training.search import Constraints, SearchSpace
    from clusterplan.training.search import search as run_search

    given = request.plan.given()
    origins = request.origins
    axes = {name: value for name, value in (("precision", request.precision), ("recompute", request.recompute),
                                            ("zero", request.zero)) if value is not None}
    options = given
    for name, value in options.items():
        if name not in SEARCH_SETTINGS and name not in ("seq_len", "global_batch", *SEARCH_AXES):
            rule = ("needs pp=1, which the search does not fix; give it to train with the plan"
                    if name == "offload_layers" else "the search enumerates the parallel layout; remove it "
                    "(train runs one plan)")
            raise SpecError(origins.get(name, flag(name)), value, rule)
        if name in SEARCH_AXES and name not in axes:  # from the plan file: the only values considered
            axes[name] = ",".join(map(str, value)) if isinstance(value, list | tuple) else str(value)
    chips, up_to, max_chips = request.chips, request.up_to, request.max_chips
    spec_model = load_model(request.model, "--model")
    hardware = hardware_for(load_system(request.system, "--system"),
                            load_chip(request.chip, "--chip") if request.chip else None)
    tokens_text = None if request.tokens is None else str(request.tokens)
    deadline_s, budget_usd = search_limits(request.deadline, request.budget, max_chips, tokens_text)
    constraints = Constraints(deadline_s=deadline_s, budget_usd=budget_usd, max_chips=max_chips)
    if chips is None:
        if max_chips is None:
            raise SpecError("--chips", None, "required: give --chips N (exactly; at most with --up-to) "
                            "or --max-chips N")
        chips, up_to = max_chips, True
    for name, value in (("--chips", chips), ("--top", request.top), ("--max-tp", request.max_tp),
                        ("--max-cp", request.max_cp), ("--max-micro-batch", request.max_micro_batch),
                        *((origins.get(f, flag(f)), options.get(f)) for f in ("seq_len", "global_batch"))):
        if isinstance(value, int) and value < 1:
            raise SpecError(name, value, "must be >= 1")
    for field in ("seq_len", "global_batch"):
        if options.get(field) is None:
            raise SpecError(flag(field), None, f"required: give {flag(field)} or {field} in --plan FILE.yaml")
    if chips > MAX_CHIPS:
        raise SpecError("--chips", chips, f"must be <= {MAX_CHIPS:,} (absurd size)")
    unit = hardware.system.allocation_size
    limit = min(chips, max_chips) if up_to and max_chips is not None else chips
    if not request.any_shape and (limit < unit if up_to else chips % unit != 0):
        domain = hardware.system.scale_up_size
        what = "scale-up domain" if unit == domain else "allocation unit"
        where = (f"({hardware.system.name})" if unit == domain else
                 f"(allocation_chips of {hardware.system.name}, whose scale-up domain has {domain:,})")
        raise SpecError("--max-chips" if max_chips == limit and up_to else "--chips", limit,
                        f"must be {'at least one' if up_to else 'a whole number of'} {what}"
                        f"{'' if up_to else 's'} of {unit:,} chips {where}; --any-shape allows any count")
    shared = spec_or_refuse(Plan, {name: options[name] for name in ("seq_len", "global_batch", *SEARCH_SETTINGS)
                                   if name in options}, origins)
    zero_stages: list[int] = []
    for item in csv_items(axes.get("zero", "0,1,2,3"), "--zero"):
        if not item.isdigit():
            raise SpecError("--zero", item, "must be 0, 1, 2 or 3")
        zero_stages.append(int(item))
    precisions = csv_items(axes.get("precision", "bf16"), "--precision")
    for item in precisions:
        if item in ("bf16", "fp8", "fp4"):
            hardware.chip.require(item, origins.get("precision", "--precision"))
    space = SearchSpace(
        precisions=precisions,
        recompute=csv_items(axes.get("recompute", "none,selective,full"), "--recompute"),
        zero=tuple(zero_stages), max_tp=request.max_tp, max_cp=request.max_cp,
        max_micro_batch=request.max_micro_batch, chips_at_most=up_to, any_shape=request.any_shape,
        settings={name: getattr(shared, name) for name in SEARCH_SETTINGS},
    )
    result = run_search(spec_model, hardware, chips, shared.seq_len, shared.global_batch, space,
                        objective=request.objective,  # type: ignore[arg-type]
                        max_memory_fraction=request.max_memory_fraction, top=request.top, tokens=request.tokens,
                        constraints=constraints, target=TrainTarget(request.model, request.system, request.chip))
    if not result.unmet and not result.best:
        shapes = "" if request.any_shape else ", --any-shape"
        raise NoAnswerError("--chips", chips, f"no plan fits ({result.plans_enumerated:,} valid plans, "
                            f"{result.plans_fitting:,} fit the memory budget): a larger memory fraction, more "
                            f"chips, a batch divisible by more DP degrees, or --up-to{shapes} may help")
    record = result.record()
    best = result.best[0] if result.best else None
    return SearchAnswer(record=record, plans_enumerated=result.plans_enumerated,
                        plans_fitting=result.plans_fitting, search_time_s=record["search_time_s"],
                        objective=record["objective"], unmet=result.unmet,
                        best_step_time_s=best["step_time_s"] if best else None,
                        best_chips=best["chips"] if best else None, result=result)
