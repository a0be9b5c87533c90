"""Error bands from the cross-validated residuals (validation/bands.py)."""

from __future__ import annotations

import numpy as np
import pytest

from clusterplan.catalog.loader import load_crossval
from clusterplan.specs.accuracy import CrossValSummary, FamilyErrors, RowErrors, StageRecord
from clusterplan.validation.bands import COVERAGE, Band, mfu_flags, regime, speed_ratio, weighted_quantiles


def _row(table: str, family: str, error: float, *, stage: str = "dense", chips: int | None = 64,
         rate: bool = True, family_out: float | None = None) -> RowErrors:
    return RowErrors(table=table, label=f"{table} {error}", family=family, stage=stage, chips=chips,  # type: ignore[arg-type]
                     higher_is_faster=rate, error_pct=error / 2, error_out_of_sample_pct=error,
                     error_family_out_pct=error if family_out is None else family_out)


def _summary(rows: list[RowErrors]) -> CrossValSummary:
    families = {
        "trainium2": FamilyErrors(own_parameters=0, own_rows=0, mape_pct=None, mape_family_out_pct=None, stages=[
            StageRecord(stage="dense", parameters=["matmul.bf16"], rows=3, tables=["t"], families=["trainium1"])]),
    }
    return CrossValSummary(tables={}, families=families, rows=rows)


def test_speed_ratio_reads_rates_and_times_the_same_way() -> None:
    # +10 % on a rate: the model was 1.1x too fast; +10 % on a time: it was 1/1.1 as fast.
    assert speed_ratio(_row("t", "hopper", 10.0), 10.0) == pytest.approx(1.1)
    assert speed_ratio(_row("t", "hopper", 10.0, rate=False), 10.0) == pytest.approx(1 / 1.1)


def test_equal_weights_give_the_hazen_quantiles() -> None:
    values = [3.0, 1.0, 4.0, 1.5, 9.0, 2.6]
    shares = [0.1, 0.5, 0.9]
    expected = np.quantile(values, shares, method="hazen")
    assert weighted_quantiles(values, [1.0] * len(values), shares) == pytest.approx(list(expected))


def test_each_table_weighs_as_much_as_any_other() -> None:
    # 100 exact rows in one table, two rows 100 % too fast in another: unweighted, the upper
    # 10 % would sit at 1.0; with each table weighing equally the second table sets it.
    rows = [_row("big", "hopper", 0.0) for _ in range(100)] + [_row("small", "hopper", 100.0)] * 2
    band = regime(_summary(rows), "hopper", "dense").band
    assert band is not None
    assert band.low == pytest.approx(1.0)
    assert band.high == pytest.approx(2.0)
    assert "2 tables" in band.basis


def test_a_family_with_rows_uses_its_table_left_out_errors_and_flags_larger_jobs() -> None:
    rows = [_row("a", "hopper", e, chips=512) for e in (-10.0, 0.0, 5.0, 20.0)]
    rows += [_row("b", "ampere", 80.0, chips=4096)]
    found = regime(_summary(rows), "hopper", "dense", chips=16_384)
    assert found.band is not None and found.band.rows == 4
    assert "table left out" in found.band.basis
    assert found.band.high < 1.8  # ampere's row is not hopper's regime
    assert any("32.0x the largest validated hopper training run (512 chips)" in f for f in found.extrapolation)
    assert regime(_summary(rows), "hopper", "dense", chips=512).extrapolation == ()


def test_a_family_without_rows_takes_the_transfer_errors_and_says_where_from() -> None:
    rows = [_row("a", "hopper", 1.0, family_out=30.0), _row("b", "trainium1", 2.0, family_out=60.0),
            _row("c", "ampere", 0.0, family_out=-10.0)]
    found = regime(_summary(rows), "trainium2", "dense", chips=100_000)
    assert found.band is not None and found.band.rows == 3
    assert "family left out" in found.band.basis
    assert found.band.high > 1.3  # the transfers were off by up to 60 %
    assert any("inherited from trainium1" in f for f in found.extrapolation)
    assert any("largest validated training run of any family" in f for f in found.extrapolation)


def test_a_family_whose_rows_only_validate_takes_their_band_and_still_says_it_inherits() -> None:
    """Trainium2's AXLearn rows are validation only: its efficiencies still come from
    Trainium1's fit, and its two rows (both 40 % too fast) are the band."""
    rows = [_row("axlearn", "trainium2", -40.0, rate=False), _row("axlearn", "trainium2", -40.0, rate=False)]
    rows += [_row("neuron_trn", "trainium1", 5.0)]
    found = regime(_summary(rows), "trainium2", "dense")
    assert found.band is not None and found.band.rows == 2
    assert found.band.low == pytest.approx(1 / 0.6) and found.band.high == pytest.approx(1 / 0.6)
    assert any(f.startswith("efficiencies inherited from trainium1") and "only measure that transfer" in f
               for f in found.extrapolation)


def test_a_band_that_leaves_out_the_estimate_says_which_way_it_is_biased() -> None:
    # Every run 40 % slower than predicted (rates 1/1.4 of the prediction): the range sits
    # above every predicted time, and the answer says so.
    slow = [_row("t", "hopper", 40.0), _row("t", "hopper", 60.0), _row("u", "hopper", 50.0)]
    flags = regime(_summary(slow), "hopper", "dense").extrapolation
    assert any("range excludes the estimate" in f and "slower than predicted" in f and "1.4" in f for f in flags)
    fast = [_row("t", "hopper", -20.0), _row("u", "hopper", -30.0)]
    flags = regime(_summary(fast), "hopper", "dense").extrapolation
    assert any("faster than predicted" in f for f in flags)
    mixed = [_row("t", "hopper", -20.0), _row("u", "hopper", 30.0)]
    assert not any("excludes" in f for f in regime(_summary(mixed), "hopper", "dense").extrapolation)


def test_stages_do_not_mix_and_too_few_rows_say_so() -> None:
    rows = [_row("a", "hopper", 5.0), _row("m", "hopper", 50.0, stage="MoE")]
    found = regime(_summary(rows), "hopper", "MoE")
    assert found.band is None
    assert any("too few" in f for f in found.extrapolation)
    with pytest.raises(ValueError):
        regime(_summary(rows), "hopper", "inference")


def test_a_publication_off_from_the_others_widens_every_band_of_the_stage() -> None:
    """Three tables agree within a few per cent; a fourth is 50 % off. Each table's runs banded
    from the other tables' runs fall outside in the fourth (and it, banded by the other three),
    so every band of the stage is widened until it would have held COVERAGE of them."""
    from clusterplan.validation.bands import conformal_margin, conformity_scores

    rows = [_row(t, "hopper", e) for t in ("a", "b", "c") for e in (-4.0, 0.0, 4.0)]
    rows += [_row("d", "hopper", e) for e in (46.0, 50.0, 54.0)]
    rows += [_row(t, "ampere", e) for t in ("a", "b", "c") for e in (-2.0, 2.0)]
    plain = regime(_summary(rows[:9]), "hopper", "dense").band
    found = regime(_summary(rows), "hopper", "dense").band
    assert plain is not None and found is not None
    assert plain.widened == pytest.approx(1.0)
    assert found.widened > 1.1
    assert "widened" in found.basis and "tables left out" in found.basis
    # The margin is the COVERAGE quantile of the runs' distances outside their bands, each
    # table weighing equally: table d's runs lie ln(1.46 / high) and more outside.
    hopper = [r for r in rows if r.family == "hopper"]
    scores = conformity_scores(hopper, lambda r: 1 + (r.error_out_of_sample_pct or 0) / 100,
                               lambda r: (r.family, r.stage))
    margin = conformal_margin(scores)
    assert margin is not None and margin.units == 4 and margin.coverage_before < COVERAGE
    assert found.widened == pytest.approx(np.exp(margin.log_factor))


def test_bands_are_never_narrowed_below_the_spread_they_come_from() -> None:
    from clusterplan.validation.bands import conformal_margin, conformity_scores

    rows = [_row(t, "hopper", e) for t in ("a", "b", "c") for e in (-10.0, 0.0, 10.0)]
    margin = conformal_margin(conformity_scores(rows, lambda r: 1 + (r.error_out_of_sample_pct or 0) / 100,
                                                lambda r: (r.family, r.stage)))
    assert margin is not None and margin.log_factor == 0.0
    # fewer than three tables scored: no margin measured, and none applied
    assert conformal_margin(conformity_scores(rows[:6], lambda r: 1.0, lambda r: r.family)) is None


@pytest.mark.parametrize(("stage", "transfer"), [("dense", False), ("dense", True), ("serving", False),
                                                  ("serving", True)])
def test_stored_bands_hold_about_their_share_of_runs_of_publications_they_have_not_seen(
        stage: str, transfer: bool) -> None:
    """Each table's runs (transfer bands: each chip family's), banded from the others' runs with a
    margin measured without them (nested): the widened bands hold close to COVERAGE of them.
    Unwidened (before round 22) they held 65 % (dense) and 52 % (serving) of a new publication's
    runs, and 69 % and 72 % of a new family's (67 % before the Trainium1 serving table)."""
    from clusterplan.validation.bands import held_out_coverage

    summary = load_crossval()
    assert summary is not None
    coverage = held_out_coverage(summary, stage, transfer)
    assert coverage.units >= 4
    assert coverage.widened >= coverage.unwidened
    assert coverage.widened >= COVERAGE - 0.1


def test_time_and_rate_intervals_are_reciprocal() -> None:
    band = Band(low=0.9, high=1.25, rows=10, basis="x")
    low, high = band.time(100.0)
    assert (low, high) == pytest.approx((90.0, 125.0))
    rate_low, rate_high = band.rate(50.0)
    assert (rate_low, rate_high) == pytest.approx((40.0, 50.0 / 0.9))


@pytest.mark.parametrize(("family", "stage"), [("hopper", "dense"), ("ampere", "dense"), ("tpu-v5e", "dense"),
                                               ("hopper", "serving"), ("blackwell", "MoE")])
def test_stored_bands_cover_about_their_share_of_the_rows_they_come_from(family: str, stage: str) -> None:
    summary = load_crossval()
    assert summary is not None
    from clusterplan.validation.bands import WIDE_EP_TABLE

    found = regime(summary, family, stage)
    assert found.band is not None
    # an answer without attention DP is banded without the wide-EP runs (H200's among them)
    rows = [r for r in summary.rows if r.family == family and r.stage == stage
            and r.error_out_of_sample_pct is not None and r.table != WIDE_EP_TABLE]
    assert found.band.rows == len(rows)
    per_table: dict[str, int] = {}
    for r in rows:
        per_table[r.table] = per_table.get(r.table, 0) + 1
    inside = sum(1.0 / per_table[r.table] for r in rows
                 if found.band.low - 1e-9 <= speed_ratio(r, r.error_out_of_sample_pct or 0.0) <= found.band.high + 1e-9)
    # Weighted empirical coverage of the central 80 %: exact up to the interpolation at each tail.
    assert inside / len(per_table) == pytest.approx(COVERAGE, abs=0.25)
    assert found.band.low < found.band.high


def _json(args: list[str]) -> dict[str, object]:
    import json

    from typer.testing import CliRunner

    from clusterplan.cli import app

    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    data: dict[str, object] = json.loads(result.stdout)
    return data


def test_train_json_carries_bands_from_its_regime_and_says_what_it_extrapolates() -> None:
    record = _json(["train", "--model", "llama3-70b", "--system", "trn2-ultraserver", "--chips", "1024", "--tp", "8",
                    "--pp", "4", "--seq", "8192", "--global-batch", "1024", "--tokens", "15T"])
    summary = load_crossval()
    expected = regime(summary, "trainium2", "dense", 1024)
    assert expected.band is not None
    bands = record["bands"]
    assert isinstance(bands, dict)
    step = record["step_time_s"]
    assert isinstance(step, float)
    assert bands["step_time_s"] == pytest.approx([step * expected.band.low, step * expected.band.high])
    mfu = record["mfu"]
    assert isinstance(mfu, float)
    assert bands["mfu"] == pytest.approx([mfu / expected.band.high, mfu / expected.band.low])
    assert {"time_to_train_s", "cost_usd", "tokens_per_s"} <= set(bands)
    flags = " ".join(str(f) for f in record["extrapolation"])  # type: ignore[attr-defined]
    assert "inherited from trainium1" in flags
    assert "is an estimate" in flags  # the Trn2 UltraServer price


def test_serve_json_bands_latency_with_time_and_throughput_with_speed() -> None:
    record = _json(["serve", "--model", "llama3-8b", "--system", "dgx-h100", "--tp", "1", "--demand", "100k"])
    bands = record["bands"]
    assert isinstance(bands, dict)
    single = record["single_request"]
    assert isinstance(single, dict)
    band = regime(load_crossval(), "hopper", "serving").band
    assert band is not None
    assert bands["single_request.ttft_s"] == pytest.approx(list(band.time(single["ttft_s"])))
    saturated = record["saturated"]
    assert isinstance(saturated, dict)
    assert bands["saturated.output_tokens_per_s"] == pytest.approx(list(band.rate(saturated["output_tokens_per_s"])))
    assert "demand.chips" in bands
    assert record["band_coverage"] == COVERAGE


def test_search_json_bands_every_ranked_plan_and_heads_with_the_best() -> None:
    record = _json(["search", "--model", "llama3-8b", "--system", "dgx-h100", "--chips", "64", "--seq", "8192",
                    "--global-batch", "256", "--tokens", "1T", "--top", "3"])
    best = record["best"]
    assert isinstance(best, list) and len(best) == 3
    assert all("step_time_s" in plan["bands"] for plan in best)
    assert record["bands"] == best[0]["bands"]
    low, high = record["bands"]["time_to_train_s"]  # type: ignore[index]
    assert low < best[0]["time_to_train_s"] * 1.0001 and high > low


def test_reliability_json_bands_its_times_and_flags_failure_rates_beyond_the_studies() -> None:
    record = _json(["reliability", "--model", "llama3-8b", "--system", "dgx-h100", "--chips", "32768", "--tp", "8",
                    "--global-batch", "4096",
                    "--tokens", "1T"])
    band = regime(load_crossval(), "hopper", "dense", 32768).band
    assert band is not None
    bands = record["bands"]
    assert isinstance(bands, dict)
    for field in ("time_to_train_s", "time_to_train_failure_free_s"):
        value = record[field]
        assert isinstance(value, float)
        assert bands[field] == pytest.approx(list(band.time(value)))
    flags = " ".join(str(f) for f in record["extrapolation"])  # type: ignore[attr-defined]
    assert "studies of up to 16,384 accelerators" in flags and "2.0x that" in flags


def test_a_family_the_stored_calibration_predates_inherits_by_the_stack_rule() -> None:
    rows = [_row("a", "hopper", 5.0), _row("b", "tpu-v5p", -5.0)]
    found = regime(_summary(rows), "cdna4", "dense")  # not in the stored families
    assert found.extrapolation[0].startswith("no published cdna4 dense training runs: efficiencies "
                                             "inherited from hopper (same software stack")
    gaudi = regime(_summary(rows), "gaudi3", "dense")
    assert "inherited from hopper, tpu-v5p (no Gaudi SynapseAI family" in gaudi.extrapolation[0]


def _run(family: str, mfu: float, *, precision: str = "bf16", stage: str = "dense") -> RowErrors:
    return _row("t", family, 1.0, stage=stage).model_copy(
        update={"label": f"run at {mfu}", "precision": precision, "mfu_published": mfu})


def test_an_mfu_above_every_published_run_of_the_regime_is_flagged() -> None:
    summary = _summary([_run("hopper", 0.40), _run("hopper", 0.45), _run("hopper", 0.60, precision="fp8"),
                        _run("hopper", 0.70, stage="MoE"), _run("ampere", 0.70)])
    flags = mfu_flags(summary, "hopper", "dense", "bf16", 0.52)
    assert len(flags) == 1
    assert "MFU 52.0 % is above every published hopper dense training run at bf16" in flags[0]
    assert "2 runs; highest 45.0 %, t: run at 0.45" in flags[0]
    # At or below the highest published run, another precision or stage, no runs, serving: none.
    assert mfu_flags(summary, "hopper", "dense", "bf16", 0.45) == ()
    assert mfu_flags(summary, "hopper", "dense", "fp8", 0.52) == ()
    # A precision the family has no published run at is itself the flag.
    unchecked = mfu_flags(summary, "hopper", "dense", "fp4", 0.10)
    assert len(unchecked) == 1 and "no published hopper dense training run at fp4 (only bf16, fp8)" in unchecked[0]
    assert mfu_flags(summary, "hopper", "MoE", "bf16", 0.52) == ()
    assert mfu_flags(summary, "blackwell", "dense", "bf16", 0.90) == ()  # no runs at all: the regime says so
    assert mfu_flags(summary, "hopper", "serving", "bf16", 0.90) == ()
    assert mfu_flags(None, "hopper", "dense", "bf16", 0.90) == ()


def test_a_published_runs_mfu_is_its_own_throughput_over_the_peak() -> None:
    """``published_mfu`` (speed ratio x predicted MFU) against the run's tokens/s computed by
    hand from its published step time, on a step-time row (AXLearn) and a per-core row."""
    from clusterplan.training.batch import PlanBatch
    from clusterplan.training.step import estimate
    from clusterplan.validation.harness import case_hardware, published_mfu
    from clusterplan.validation.registry import all_cases

    checked = 0
    for case in all_cases(["axlearn_2025", "neuron_trn"]):
        if case.skip is not None or case.plan is None or case.model is None:
            continue
        result = estimate(case.model, case_hardware(case), PlanBatch.from_plans([case.plan], case.model))
        flops_per_token = float(result.model_flops_per_s_per_chip[0] / result.tokens_per_s_per_chip[0])
        peak = float(result.model_flops_per_s_per_chip[0] / result.mfu[0])
        if case.metric == "step_time_s":
            chips = case.plan.chips
            tokens_per_s_per_chip = case.plan.global_batch * case.plan.seq_len / (case.published * chips)
        else:
            assert case.metric == "tokens_per_s_per_chip"
            tokens_per_s_per_chip = case.published / case.devices_per_chip
        assert published_mfu(case) == pytest.approx(tokens_per_s_per_chip * flops_per_token / peak, rel=1e-9)
        checked += 1
    assert checked >= 30


def test_the_stored_cross_validation_holds_each_training_runs_mfu() -> None:
    rows = load_crossval().rows
    training = [r for r in rows if r.stage != "serving"]
    assert training and all(r.mfu_published is not None and r.precision is not None for r in training)
    assert all(0.0 < (r.mfu_published or 0.0) < 1.0 for r in training)
    assert all(r.mfu_published is None for r in rows if r.stage == "serving")


def test_an_overlapped_ep_plan_is_told_its_saving_is_an_upper_bound() -> None:
    from clusterplan.validation.bands import EP_OVERLAP_FLAG

    argv = ["train", "--model", "qwen3-30b-a3b", "--system", "dgx-h100", "--chips", "16", "--ep", "16", "--seq", "4096",
            "--global-batch", "256", "--recompute", "none"]
    plain, overlapped = _json(argv), _json([*argv, "--overlap-ep"])
    assert EP_OVERLAP_FLAG in overlapped["extrapolation"]  # type: ignore[operator]
    assert EP_OVERLAP_FLAG not in plain["extrapolation"]  # type: ignore[operator]
    assert overlapped["step_time_s"] < plain["step_time_s"]  # type: ignore[operator]


def test_wide_ep_runs_band_attention_dp_answers_only_and_flag_them() -> None:
    """The attention-DP, wide-EP serving runs (MLPerf deepseek-r1) are not a dense model's
    regime: a serving answer without attention DP is banded without them; one with it is banded
    with them and told their range of predicted over published speed."""
    from clusterplan.validation.bands import WIDE_EP_TABLE

    rows = [_row("mlperf_inference", "blackwell", e, stage="serving", chips=None) for e in (-5.0, 0.0, 10.0)]
    rows += [_row(WIDE_EP_TABLE, "blackwell", e, stage="serving", chips=None) for e in (130.0, 330.0)]
    dense = regime(_summary(rows), "blackwell", "serving")
    assert dense.band is not None and dense.band.rows == 3 and dense.band.high < 1.2
    assert not any("wide EP" in flag for flag in dense.extrapolation)
    wide = regime(_summary(rows), "blackwell", "serving", attention_dp=True)
    assert wide.band is not None and wide.band.rows == 5 and wide.band.high > 2.0
    assert any("predicted 2.3-4.3x too fast" in flag for flag in wide.extrapolation)


def test_per_second_rates_are_rates_and_seconds_are_times() -> None:
    """Serving throughput (``output_tokens_per_s``) is a rate although its name ends in ``_s``;
    TTFT, TPOT and step times are times. The stored rows say the same."""
    from clusterplan.validation.case import higher_is_faster

    assert higher_is_faster("output_tokens_per_s") and higher_is_faster("tokens_per_s_per_chip")
    assert higher_is_faster("model_tflops_per_chip")
    assert not any(higher_is_faster(m) for m in ("step_time_s", "ttft_s", "tpot_s"))
    stored = load_crossval()
    assert stored is not None
    throughput = [r for r in stored.rows if r.table in ("inference_throughput", "mlperf_inference")]
    assert throughput and all(r.higher_is_faster for r in throughput)


def test_a_chip_without_a_fitted_sustained_clock_is_flagged_where_its_family_has_some() -> None:
    from clusterplan.costs.compute import Efficiency
    from clusterplan.validation.bands import clock_flags

    fitted = Efficiency(family="blackwell", matmul={"bf16": 0.7}, attention=0.5, hbm=0.8, kernel_overhead_s=0.0,
                        reserved_bytes=0.0, sustained_clock={"gb200": 0.83, "gb300": 1.01})
    assert clock_flags("gb200", fitted) == ()
    (flag,) = clock_flags("b300", fitted)
    assert flag.startswith("b300: no published blackwell run") and "0.83-1.01" in flag
    assert clock_flags("b300", fitted.model_copy(update={"sustained_clock": {}})) == ()


def test_sustained_clock_ratios_are_bounded() -> None:
    from pydantic import ValidationError

    from clusterplan.costs.compute import Efficiency

    with pytest.raises(ValidationError, match=r"sustained_clock\.gb200"):
        Efficiency(family="blackwell", matmul={"bf16": 0.7}, attention=0.5, hbm=0.8, kernel_overhead_s=0.0,
                   reserved_bytes=0.0, sustained_clock={"gb200": 2.0})


def test_validate_reports_how_often_the_bands_held_tables_left_out() -> None:
    """``validate`` checks the stored bands on the tables they were not drawn from, in its JSON
    and in the terminal, whatever tables it predicts."""
    from typer.testing import CliRunner

    from clusterplan.cli import app

    data = _json(["validate", "--table", "korthikanti2022"])
    coverage = data["band_coverage"]
    assert isinstance(coverage, dict) and coverage["nominal"] == COVERAGE
    checks = {(c["stage"], c["transfer"]): c for c in coverage["checks"]}
    assert {("dense", False), ("dense", True), ("serving", False), ("serving", True)} <= set(checks)
    for check in checks.values():
        assert check["widened_by"] >= 1.0
        assert check["held_widened"] >= check["held_unwidened"]
        assert check["units"] >= 2 and check["rows"] > check["units"]
    text = CliRunner().invoke(app, ["validate", "--table", "korthikanti2022", "--no-skipped"])
    assert text.exit_code == 0, text.output
    assert "on runs the fit never saw" in text.output and "widened by" in text.output
