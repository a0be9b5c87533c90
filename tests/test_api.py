"""The typed planning API answers exactly what the CLI's --json prints (byte for byte), and
refuses bad input with the CLI's one line (SpecError: field, value, rule)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cliutil import run_cli
from clusterplan.api import capacity, reliability, search, serve, train
from clusterplan.api._base import PlanOptions
from clusterplan.errors import SpecError


def cli_json(capsys: Any, argv: list[str]) -> str:
    code, out, err = run_cli(capsys, argv)
    assert code == 0, err
    return out


def test_train_answer_is_the_cli_json(capsys: Any) -> None:
    argv = ["train", "--model", "llama3-70b", "--system", "dgx-h100", "--chips", "1024", "--tp", "8", "--pp", "4",
            "--seq", "8192", "--global-batch", "512", "--tokens", "15T", "--json"]
    answer = train.answer(train.TrainRequest(model="llama3-70b", system="dgx-h100", chips=1024, tokens="15T",
                                             plan=PlanOptions(tp=8, pp=4, seq_len=8192, global_batch=512)))
    assert answer.to_json() == cli_json(capsys, argv)
    assert answer.step_time_s == json.loads(answer.to_json())["step_time_s"] and answer.fits_memory


def test_search_answer_is_the_cli_json(capsys: Any) -> None:
    argv = ["search", "--model", "llama3-8b", "--system", "dgx-h100", "--chips", "64", "--seq", "4096",
            "--global-batch", "256", "--top", "3", "--precision", "bf16,fp8", "--json"]
    answer = search.answer(search.SearchRequest(model="llama3-8b", system="dgx-h100", chips=64, top=3,
                                                precision="bf16,fp8", plan=PlanOptions(seq_len=4096, global_batch=256)))
    cli = json.loads(cli_json(capsys, argv))
    ours = json.loads(answer.to_json())
    cli.pop("search_time_s"), ours.pop("search_time_s")  # wall-clock time: the one figure that differs
    assert ours == cli
    assert answer.best_step_time_s == cli["best"][0]["step_time_s"]


def test_serve_answer_is_the_cli_json(capsys: Any) -> None:
    argv = ["serve", "--model", "llama3-8b", "--system", "dgx-h100", "--tp", "2", "--slo-ttft", "2s",
            "--slo-tpot", "100ms", "--demand", "1M", "--requests", "300", "--json"]
    answer = serve.answer(serve.ServeRequest(model="llama3-8b", system="dgx-h100", tp=2, slo_ttft_s="2s",
                                             slo_tpot_s="100ms", demand_output_tokens_per_s="1M", requests=300))
    assert answer.to_json() == cli_json(capsys, argv)


def test_capacity_answer_is_the_cli_json(capsys: Any) -> None:
    argv = ["capacity", "--model", "llama3-8b", "--system", "dgx-h100", "--demand", "1M", "--slo-ttft", "2s",
            "--slo-tpot", "100ms", "--requests", "200", "--top", "2", "--json"]
    answer = capacity.answer(capacity.CapacityRequest(
        model="llama3-8b", system="dgx-h100", demand_output_tokens_per_s=1e6, slo_ttft_s=2.0, slo_tpot_s=0.1,
        requests=200, top=2))
    assert answer.to_json() == cli_json(capsys, argv)
    assert answer.candidates >= answer.simulated > 0


def test_reliability_answer_is_the_cli_json(capsys: Any) -> None:
    argv = ["reliability", "--model", "llama3-70b", "--system", "dgx-h100", "--chips", "1024", "--tp", "8",
            "--pp", "4", "--tokens", "15T", "--checkpoint", "async", "--json"]
    answer = reliability.answer(reliability.ReliabilityRequest(
        model="llama3-70b", system="dgx-h100", chips=1024, tokens=15e12, checkpoint="async",
        plan=PlanOptions(tp=8, pp=4)))
    assert answer.to_json() == cli_json(capsys, argv)
    assert 0 < answer.goodput < 1


@pytest.mark.parametrize(("make", "field"), [
    (lambda: train.TrainRequest(model="llama3-8b", system="dgx-h100", chips=8, tokens="5x"), "--tokens"),
    (lambda: capacity.CapacityRequest(model="llama3-8b", system="dgx-h100", demand_output_tokens_per_s="-1",
                                      slo_ttft_s="2s", slo_tpot_s="100ms"), "--demand"),
    (lambda: reliability.ReliabilityRequest(model="llama3-8b", system="dgx-h100", chips=8, duration_s="3x"),
     "--duration"),
])
def test_requests_refuse_at_the_edge_with_the_cli_field(make: Any, field: str) -> None:
    with pytest.raises(SpecError) as refused:
        make()
    assert refused.value.field == field


def test_answers_refuse_like_the_cli() -> None:
    with pytest.raises(SpecError) as refused:
        train.answer(train.TrainRequest(model="nosuch", system="dgx-h100", chips=8,
                                        plan=PlanOptions(seq_len=4096, global_batch=64)))
    assert refused.value.field == "--model"
    with pytest.raises(SpecError) as refused:
        train.answer(train.TrainRequest(model="llama3-8b", system="dgx-h100", chips=8,
                                        plan=PlanOptions(tp=0, seq_len=4096, global_batch=64)))
    assert (refused.value.field, refused.value.rule) == ("--tp", "must be >= 1")


def test_answers_are_frozen() -> None:
    answer = train.answer(train.TrainRequest(model="llama3-8b", system="dgx-h100", chips=8,
                                             plan=PlanOptions(seq_len=4096, global_batch=64)))
    with pytest.raises(ValueError):
        answer.step_time_s = 1.0  # type: ignore[misc]


# ---- validate, calibrate, sweep: entry points in api/ too ------------------------------------------
def test_validate_answer_is_the_cli_json(capsys: Any) -> None:
    from clusterplan.api import validate

    argv = ["validate", "--table", "megatron_sc21", "--json"]
    answer = validate.answer(validate.ValidateRequest(tables=["megatron_sc21"]))
    assert answer.to_json() == cli_json(capsys, argv)
    assert answer.crossval_origin == validate.STORED and answer.results


def test_validate_and_calibrate_requests_refuse_like_the_cli() -> None:
    from clusterplan.api import validate

    with pytest.raises(SpecError, match=r"^--table='nope': unknown table \(known: "):
        validate.ValidateRequest(tables=["nope"], workers=0)  # the first refusal the CLI gives
    with pytest.raises(SpecError, match=r"^--workers=0: must be >= 1$"):
        validate.ValidateRequest(workers=0)
    with pytest.raises(SpecError, match=r"^--workers=0: must be >= 1$"):
        validate.CalibrateRequest(workers=0)


def test_calibrate_writes_the_catalog_files_by_default() -> None:
    """Without --output / --crossval-output, `calibrate` replaces the files the catalog loads."""
    from clusterplan.api import validate
    from clusterplan.catalog import loader

    request = validate.CalibrateRequest()
    catalog = Path(loader.__file__).parent
    assert request.efficiency_path == catalog / "efficiency.yaml" and request.efficiency_path.is_file()
    assert request.crossval_path == catalog / loader.CROSSVAL_FILE and request.crossval_path.is_file()
    assert validate.CalibrateRequest(output=Path("e.yaml")).efficiency_path == Path("e.yaml")


def test_sweep_answer_is_the_cli_json(capsys: Any, tmp_path: Path) -> None:
    from clusterplan.api import sweep

    example = Path(__file__).resolve().parents[1] / "examples" / "sweep-small.yaml"
    output = tmp_path / "rows.parquet"
    request = sweep.SweepRequest(sweep_file=example, output=output, workers=1)
    answer = sweep.answer(request, sweep.prepare(request))
    cli = json.loads(cli_json(capsys, ["sweep", str(example), "--output", str(output), "--workers", "1", "--json"]))
    ours = json.loads(answer.to_json())
    for row in [*cli["plans"], *ours["plans"]]:
        row.pop("search_time_s")  # wall-clock time
    assert ours == cli and answer.axes
    with pytest.raises(SpecError, match=r"^--max-points=0: must be >= 1$"):
        sweep.SweepRequest(sweep_file=example, max_points=0)
    with pytest.raises(SpecError, match=r"^--executor='slurm': must be local or ray$"):
        sweep.prepare(sweep.SweepRequest(sweep_file=example, executor="slurm"))
