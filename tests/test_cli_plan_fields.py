"""Every Plan field reachable from the CLI (options and --plan FILE.yaml), the automatic
balanced layer split, the settings a user left open (``assumed``), and Korthikanti et al.
2022 Table 5 run through ``clusterplan train`` as a user would."""

from __future__ import annotations

import csv
import json
from importlib import resources

import pytest
import yaml
from rich.console import Console

from cliutil import run_cli
from clusterplan import cli
from clusterplan.specs import Plan
from clusterplan.specs.plan import balanced_layer_split
from clusterplan.validation.cases import korthikanti2022
from clusterplan.validation.harness import run_case
from test_cli import assert_refused, train_result

L405 = ["train", "--model", "llama3-405b", "--system", "dgx-h100", "--chips", "16384", "--tp", "8", "--pp", "16",
        "--seq", "8192", "--global-batch", "2048"]
L8 = ["train", "--model", "llama3-8b", "--system", "dgx-h100", "--chips", "8", "--seq", "8192",
      "--global-batch", "64"]


def run_json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> dict:
    """``train --json``: exit 0 for a plan that fits, 1 (record printed, one error line) otherwise."""
    return train_result(*run_cli(capsys, [*argv, "--json"]))


# ---- Korthikanti et al. 2022, Table 5, through the CLI ------------------------------------------

def _table5_rows() -> list[dict[str, str]]:
    text = resources.files("clusterplan.validation").joinpath("tables/korthikanti2022.csv").read_text("utf-8")
    return list(csv.DictReader(text.splitlines()))


def test_korthikanti_table5_through_the_cli(capsys, tmp_path):
    """Each row as a user types it: the paper's GPT as a model YAML, the 2022 Megatron settings
    in a --plan file, the row's layout and recompute as options. The CLI must reproduce the
    validation harness's prediction exactly (so it can express every setting the validation
    uses) and stay within 5 % of the published iteration times on average."""
    settings = tmp_path / "megatron-2022.yaml"
    settings.write_text("zero: 0\nflash_attention: false\noverlap_dp: false\noverlap_pp: false\n", "utf-8")
    cases = {case.label: case for case in korthikanti2022()}
    errors = []
    for index, row in enumerate(_table5_rows()):
        hidden = int(row["hidden_size"])
        model = tmp_path / f"gpt-{index}.yaml"
        model.write_text(yaml.safe_dump({
            "name": row["model"], "layers": int(row["num_layers"]), "hidden_size": hidden,
            "ffn_hidden_size": 4 * hidden, "attention_heads": int(row["attention_heads"]),
            "kv_heads": int(row["attention_heads"]), "vocab_size": int(row["vocab_size"]),
            "ffn_activation": "gelu", "tied_embeddings": True, "dropout": True, "source": row["source"]}), "utf-8")
        layout = ["--tp", row["tensor_parallel"], "--pp", row["pipeline_parallel"],
                  "--vp", row["interleave_stages_m"] or "1", "--dp", row["data_parallel"],
                  "--micro-batch", row["micro_batch_size"]]
        runs = (("full recompute", ["--recompute", "full", "--no-sp"], row["iter_time_full_recompute_s"]),
                ("SP+selective", ["--recompute", "selective", "--sp"], row["iter_time_seqpar_selective_s"]))
        for label, recompute, published in runs:
            if not published:
                continue
            record = run_json(capsys, ["train", "--model", str(model), "--system", "dgx-a100",
                                       "--chips", row["num_gpus"], "--seq", row["seq_len_tokens"],
                                       "--global-batch", row["global_batch_size_seqs"], "--plan", str(settings),
                                       *layout, *recompute])
            case = cases[f"{row['model']} {row['num_gpus']} GPUs, {label}"]
            assert case.plan is not None and case.skip is None
            assert record["plan"] == case.plan.model_dump(mode="json", exclude_none=True)
            predicted = run_case(case).predicted
            assert predicted is not None
            assert record["step_time_s"] == pytest.approx(predicted, rel=1e-12)
            errors.append(abs(record["step_time_s"] / float(published) - 1.0))
    assert len(errors) == 9
    assert sum(errors) / len(errors) <= 0.05


# ---- the balanced layer split, chosen automatically ------------------------------------------

@pytest.mark.parametrize("vp", [None, "2", "4", "8"])
def test_llama3_405b_pp16_gets_the_balanced_split(capsys, vp):
    """126 layers over 16 stages: 7 + 14 x 8 + 7 (Llama 3 405B), also interleaved."""
    record = run_json(capsys, L405 + (["--vp", vp] if vp else []))
    split = record["layer_split"]
    assert (split["first_stage_layers"], split["middle_stage_layers"], split["last_stage_layers"]) == (7, 8, 7)
    assert split["chosen"] == "automatically"
    assert split["split"] == "7+14x8+7"
    assert record["plan"]["first_stage_layers"] == 7
    assert record["plan"]["last_stage_layers"] == 7
    assert record["plan"]["vp"] == int(vp or 1)


def test_the_automatic_split_states_itself_in_the_table(capsys, monkeypatch):
    monkeypatch.setattr(cli._common, "console", Console(width=80))
    code, out, err = run_cli(capsys, L405)
    assert code == 0, err
    assert "7+14x8+7 (balanced, chosen automatically)" in out
    assert max(len(line) for line in out.splitlines()) <= 80


def test_an_explicit_split_wins(capsys):
    record = run_json(capsys, [*L405, "--first-stage-layers", "6", "--last-stage-layers", "8"])
    assert record["layer_split"]["chosen"] == "given"
    assert record["layer_split"]["split"] == "6+14x8+8"
    automatic = run_json(capsys, L405)
    assert record["step_time_s"] != automatic["step_time_s"]
    assert all(a["field"] != "layer_split" for a in record["assumed"])


def test_an_even_split_says_so(capsys):
    record = run_json(capsys, ["train", "--model", "llama3-70b", "--system", "dgx-h100", "--chips", "64",
                               "--tp", "8", "--pp", "4", "--seq", "8192", "--global-batch", "64"])
    assert record["layer_split"]["chosen"] == "even"
    assert record["layer_split"]["split"] == "20+2x20+20"
    assert "first_stage_layers" not in record["plan"]


def test_an_odd_remainder_gives_the_first_stage_the_extra_layer(capsys):
    """DeepSeek-V3's 61 layers on PP16: middle stages of 4, the 5 left over as 3 + 2 (the last
    stage also carries the LM head and loss), with the step timed on that split."""
    code, out, _ = run_cli(capsys, ["train", "--model", "deepseek-v3", "--system", "dgx-h800",
                                       "--chips", "2048", "--seq", "4096", "--global-batch", "2048",
                                       "--pp", "16", "--ep", "64", "--precision", "fp8",
                                       "--recompute", "full", "--json"])
    assert code == 0
    record = json.loads(out)
    assert record["layer_split"]["split"] == "3+14x4+2"
    assert record["layer_split"]["chosen"] == "automatically"
    assert balanced_layer_split(61, 16) == (3, 4, 2)
    # With two virtual stages the two-layer last stage would be lighter by a whole chunk.
    assert balanced_layer_split(61, 16, 2) is None


@pytest.mark.parametrize(("vp", "needles"), [
    ("3", ("--pp=16", "layers=126", "pp*vp=16*3", "vp=3")),
    ("16", ("--pp=16", "layers=126", "pp*vp=16*16", "vp=16")),
])
def test_no_balanced_split_is_refused_naming_pp_and_vp(capsys, vp, needles):
    assert_refused(*run_cli(capsys, [*L405, "--vp", vp, "--json"]), *needles)


def test_what_the_search_proposes_runs_as_printed(capsys):
    """The search's plans (uneven splits included) re-run with train from the printed layout
    alone give the same step time."""
    found = run_json(capsys, ["search", "--model", "llama3-405b", "--system", "dgx-h100", "--chips", "16384",
                              "--seq", "8192", "--global-batch", "2048", "--top", "4"])
    assert any(best["plan"].get("first_stage_layers") == 7 and best["plan"]["vp"] > 1 for best in found["best"])
    for best in found["best"]:
        plan = best["plan"]
        argv = ["train", "--model", "llama3-405b", "--system", "dgx-h100", "--chips", str(best["chips"]),
                "--seq", "8192", "--global-batch", "2048"]
        for field in ("tp", "pp", "vp", "cp", "dp", "micro_batch", "recompute", "zero", "precision"):
            argv += [cli.flag(field), str(plan[field])]
        again = run_json(capsys, argv)
        assert again["plan"] == plan
        assert again["step_time_s"] == pytest.approx(best["step_time_s"], rel=1e-12)


def test_the_rainier_plan_runs_with_train(capsys):
    """The Rainier report's plan (TP8 PP16 VP8 CP8 DP256 on llama3-405b) was refused before:
    'layers=126 must be divisible by pp*vp=128'."""
    record = run_json(capsys, ["train", "--model", "llama3-405b", "--system", "trn2-ultraserver",
                               "--chips", "262144", "--tp", "8", "--pp", "16", "--vp", "8", "--cp", "8",
                               "--seq", "8192", "--global-batch", "2048"])
    assert record["plan"]["dp"] == 256
    assert record["layer_split"]["split"] == "7+14x8+7"
    assert record["step_time_s"] > 0


# ---- assumed: the settings left open -----------------------------------------------------------

FLAG_OF_ALTERNATIVE = {True: "--{}", False: "--no-{}"}


def _option(field: str, value: object) -> list[str]:
    if isinstance(value, bool):
        return [FLAG_OF_ALTERNATIVE[value].format(field.replace("_", "-"))]
    if field == "layer_split":
        first, *_, last = str(value).replace("x", "+").split("+")
        return ["--first-stage-layers", first, "--last-stage-layers", last]
    return [cli.flag(field), str(value)]


def test_assumed_lists_the_open_settings_with_their_alternatives(capsys):
    record = run_json(capsys, L405)
    assumed = record["assumed"]
    fields = {a["field"] for a in assumed}
    assert {"vp", "micro_batch", "recompute", "flash_attention", "overlap_tp", "overlap_pp", "zero",
            "grad_reduce", "layer_split"} <= fields
    changes = [abs(a["step_change"]) for a in assumed]
    assert changes == sorted(changes, reverse=True)
    assert max(changes) > 0.01
    for item in assumed:
        assert item["step_time_s_if_changed"] == pytest.approx(
            record["step_time_s"] * (1 + item["step_change"]), rel=1e-12)
        assert item["value"] != item["alternative"]
    vp = next(a for a in assumed if a["field"] == "vp")
    assert (vp["value"], vp["alternative"]) == (1, 2)


@pytest.mark.parametrize("field", ["vp", "micro_batch", "recompute", "flash_attention", "overlap_tp",
                                   "overlap_pp", "zero", "grad_reduce", "layer_split"])
def test_each_alternative_is_what_train_gives_with_it(capsys, field):
    """step_time_s_if_changed equals train run with that alternative given explicitly."""
    record = run_json(capsys, L405)
    for item in (a for a in record["assumed"] if a["field"] == field):
        changed = run_json(capsys, [*L405, *_option(field, item["alternative"])])
        assert changed["step_time_s"] == pytest.approx(item["step_time_s_if_changed"], rel=1e-12)
        assert changed["memory_bytes_per_chip"] == pytest.approx(item["memory_bytes_per_chip_if_changed"],
                                                                 rel=1e-12)


QWEN235 = ["train", "--model", "qwen3-235b-a22b", "--system", "dgx-h100", "--chips", "256", "--pp", "8",
           "--ep", "32", "--seq", "4096", "--global-batch", "1024", "--precision", "fp8"]


def test_moe_plans_report_routing_skew_and_dispatch(capsys):
    """An expert-parallel plan assumes balanced routing (as published runs) and Megatron's flat
    all-to-all; ``assumed`` says what real-text skew (Gini 0.2), EP overlap and per-node
    de-duplication would change, each equal to train run with it given."""
    record = run_json(capsys, QWEN235)
    assumed = {a["field"]: a for a in record["assumed"]}
    assert (assumed["routing_gini"]["value"], assumed["routing_gini"]["alternative"]) == (0.0, 0.2)
    assert assumed["routing_gini"]["step_change"] > 0
    assert (assumed["overlap_ep"]["value"], assumed["ep_dedup"]["value"]) == (False, False)
    assert assumed["overlap_ep"]["step_change"] < 0 and assumed["ep_dedup"]["step_change"] < 0
    skewed = run_json(capsys, [*QWEN235, "--routing-gini", "0.2"])
    assert skewed["step_time_s"] == pytest.approx(assumed["routing_gini"]["step_time_s_if_changed"], rel=1e-12)
    balanced = run_json(capsys, [*QWEN235, "--routing-gini", "0"])
    assert balanced["step_time_s"] == pytest.approx(record["step_time_s"], rel=1e-12)
    assert "routing_gini" not in {a["field"] for a in balanced["assumed"]}
    dense = {a["field"] for a in run_json(capsys, L405)["assumed"]}
    assert dense.isdisjoint({"routing_gini", "overlap_ep", "ep_dedup"})


def test_given_settings_are_not_assumed(capsys):
    record = run_json(capsys, [*L405, "--vp", "2", "--micro-batch", "1", "--recompute", "full", "--zero", "1",
                               "--flash-attention", "--no-overlap-tp", "--overlap-pp", "--grad-reduce", "fp32"])
    fields = {a["field"] for a in record["assumed"]}
    assert fields.isdisjoint({"vp", "micro_batch", "recompute", "flash_attention", "overlap_tp", "overlap_pp",
                              "zero", "grad_reduce"})
    assert "layer_split" in fields


def test_invalid_alternatives_are_left_out(capsys):
    """llama3-8b on one chip: no pipeline, no TP, no DP: no vp, overlap or grad-reduce
    alternative, and micro-batch 2 does not divide a batch of 1."""
    record = run_json(capsys, ["train", "--model", "llama3-8b", "--system", "dgx-h100", "--chips", "1",
                               "--seq", "4096", "--global-batch", "1"])
    fields = {a["field"] for a in record["assumed"]}
    assert fields.isdisjoint({"vp", "overlap_tp", "overlap_pp", "overlap_dp", "grad_reduce", "layer_split",
                              "micro_batch"})
    assert {"recompute", "flash_attention", "zero"} <= fields


def test_the_table_names_the_most_influential_assumption(capsys, monkeypatch):
    monkeypatch.setattr(cli._common, "console", Console(width=80))
    record = run_json(capsys, L405)
    top = record["assumed"][0]
    code, out, err = run_cli(capsys, L405)
    assert code == 0, err
    line = next(line for line in out.splitlines() if line.startswith("assumed "))
    assert line.startswith(f"assumed {top['field']}=")
    assert f"{100 * top['step_change']:+.1f} %" in line


# ---- every Plan field reachable; --plan FILE.yaml ---------------------------------------------

#: Fields that make no sense for search: it enumerates the layout (and SP is always on).
SEARCH_ENUMERATES = {"tp", "pp", "vp", "cp", "dp", "ep", "etp", "micro_batch", "sp", "dp_shard",
                     "first_stage_layers", "last_stage_layers", "ep_within_scale_up", "precision",
                     "recompute", "zero", "seq_len", "global_batch"}


def _options_of(command: str) -> set[str]:
    import typer.main

    group = typer.main.get_command(cli.app)
    click_command = group.commands[command]  # type: ignore[attr-defined]
    return {opt for param in click_command.params for opt in [*param.opts, *param.secondary_opts]}


@pytest.mark.parametrize("command", ["train", "reliability"])
def test_every_plan_field_is_an_option(command):
    options = _options_of(command)
    for field in Plan.model_fields:
        assert cli.flag(field) in options, field
    for switch in ("flash-attention", "overlap-pp", "overlap-tp", "overlap-dp", "overlap-ep", "sp"):
        assert {f"--{switch}", f"--no-{switch}"} <= options
    assert "--plan" in options


def test_search_takes_the_shared_settings():
    options = _options_of("search")
    for field in set(Plan.model_fields) - SEARCH_ENUMERATES:
        assert cli.flag(field) in options, field
    assert {"--no-flash-attention", "--no-overlap-pp", "--grad-reduce", "--plan"} <= options


NON_DEFAULT = [("--no-flash-attention", "flash_attention", False), ("--no-overlap-pp", "overlap_pp", False),
               ("--overlap-tp", "overlap_tp", True), ("--no-overlap-dp", "overlap_dp", False),
               ("--grad-reduce=fp32", "grad_reduce", "fp32"), ("--zero=3", "zero", 3),
               ("--dp-shard=2", "dp_shard", 2), ("--recompute-modules=core_attn,layernorm", "recompute_modules",
                                                 ["core_attn", "layernorm"]),
               ("--no-sp", "sp", False), ("--precision=fp8", "precision", "fp8"), ("--mtp=1", "mtp", 1)]


@pytest.mark.parametrize(("option", "field", "value"), NON_DEFAULT)
def test_train_options_reach_the_plan(capsys, option, field, value):
    base = ["train", "--model", "llama3-8b", "--system", "dgx-h100", "--chips", "16", "--tp", "2", "--pp", "2",
            "--seq", "8192", "--global-batch", "64"]
    default = run_json(capsys, base)
    record = run_json(capsys, [*base, option])
    assert record["plan"][field] == value
    assert default["plan"].get(field) != value


def test_moe_options_reach_the_plan(capsys):
    record = run_json(capsys, ["train", "--model", "qwen3-30b-a3b", "--system", "dgx-h100", "--chips", "16",
                               "--tp", "2", "--ep", "4", "--etp", "2", "--capacity-factor", "1.25",
                               "--routing-gini", "0", "--overlap-ep", "--ep-within-scale-up", "--seq", "4096",
                               "--global-batch", "64"])
    plan = record["plan"]
    assert (plan["ep"], plan["etp"], plan["capacity_factor"], plan["routing_gini"]) == (4, 2, 1.25, 0.0)
    assert plan["overlap_ep"] is True and plan["ep_within_scale_up"] is True


def test_plan_file_holds_any_field_and_given_options_override_it(capsys, tmp_path):
    plan = tmp_path / "plan.yaml"
    plan.write_text("seq_len: 8192\nglobal_batch: 64\ntp: 2\npp: 2\nzero: 0\nflash_attention: false\n"
                    "recompute: full\nrecompute_modules: [core_attn]\noverlap_pp: false\n", "utf-8")
    base = ["train", "--model", "llama3-8b", "--system", "dgx-h100", "--chips", "16", "--plan", str(plan)]
    record = run_json(capsys, base)
    assert {k: record["plan"][k] for k in ("seq_len", "global_batch", "tp", "pp", "dp", "zero", "flash_attention",
                                           "recompute", "overlap_pp")} == {
        "seq_len": 8192, "global_batch": 64, "tp": 2, "pp": 2, "dp": 4, "zero": 0, "flash_attention": False,
        "recompute": "full", "overlap_pp": False}
    assert {a["field"] for a in record["assumed"]}.isdisjoint({"zero", "flash_attention", "recompute", "overlap_pp"})
    overridden = run_json(capsys, [*base, "--zero", "2", "--flash-attention", "--tp", "4"])
    assert (overridden["plan"]["zero"], overridden["plan"]["flash_attention"], overridden["plan"]["tp"]) == (2, True, 4)
    assert overridden["plan"]["dp"] == 2
    assert overridden["plan"]["recompute"] == "full"


def test_search_and_reliability_read_the_plan_file(capsys, tmp_path):
    plan = tmp_path / "plan.yaml"
    plan.write_text("flash_attention: false\noverlap_pp: false\ngrad_reduce: fp32\nzero: 1\n", "utf-8")
    found = run_json(capsys, ["search", "--model", "llama3-8b", "--system", "dgx-h100", "--chips", "16",
                              "--seq", "4096", "--global-batch", "64", "--plan", str(plan), "--top", "3"])
    for best in found["best"]:
        assert (best["plan"]["flash_attention"], best["plan"]["overlap_pp"]) == (False, False)
        assert (best["plan"]["grad_reduce"], best["plan"]["zero"], best["plan"]["cp"]) == ("fp32", 1, 1)
    flash = run_json(capsys, ["search", "--model", "llama3-8b", "--system", "dgx-h100", "--chips", "16",
                              "--seq", "4096", "--global-batch", "64", "--plan", str(plan), "--top", "1",
                              "--flash-attention"])
    assert flash["best"][0]["plan"]["flash_attention"] is True
    assert flash["best"][0]["step_time_s"] < found["best"][0]["step_time_s"]
    reliable = run_json(capsys, ["reliability", "--model", "llama3-8b", "--system", "dgx-h100", "--chips", "16",
                                 "--tp", "2", "--plan", str(plan), "--tokens", "1T", "--no-overlap-dp"])
    assert reliable["plan"]["flash_attention"] is False and reliable["plan"]["overlap_dp"] is False
    assert (reliable["plan"]["seq_len"], reliable["plan"]["global_batch"]) == (8192, 2048)


@pytest.mark.parametrize(("text", "needles"), [
    ("flash_atention: false\n", ("plan.yaml:flash_atention", "unknown Plan field", "flash_attention")),
    ("zero: 7\n", ("plan.yaml:zero", "7", "0, 1, 2 or 3")),
    ("tp: eight\n", ("plan.yaml:tp", "eight", "integer")),
    ("overlap_pp: maybe\n", ("plan.yaml:overlap_pp", "maybe", "boolean")),
    ("recompute_modules: [attn]\n", ("plan.yaml:recompute_modules", "attn", "core_attn")),
    ("pp: 3\nvp: 2\n", ("plan.yaml:pp", "3", "layers=32")),
    ("- tp\n", ("--plan", "plan.yaml", "mapping")),
    ("tp: [1\n", ("--plan", "plan.yaml", "YAML")),
])
def test_bad_plan_file_is_one_line(capsys, tmp_path, text, needles):
    plan = tmp_path / "plan.yaml"
    plan.write_text(text, "utf-8")
    assert_refused(*run_cli(capsys, [*L8, "--chips", "24", "--plan", str(plan), "--json"]), *needles)


def test_search_refuses_layout_fields_in_the_plan_file(capsys, tmp_path):
    plan = tmp_path / "plan.yaml"
    plan.write_text("tp: 8\n", "utf-8")
    assert_refused(*run_cli(capsys, ["search", "--model", "llama3-8b", "--system", "dgx-h100", "--chips", "8",
                                     "--seq", "4096", "--global-batch", "64", "--plan", str(plan)]),
                   "plan.yaml:tp", "enumerates")


@pytest.mark.parametrize("argv", [
    [*L8[:-2]],
    ["search", "--model", "llama3-8b", "--system", "dgx-h100", "--chips", "8", "--seq", "4096"],
])
def test_a_batch_is_required_from_the_line_or_the_file(capsys, argv):
    assert_refused(*run_cli(capsys, argv), "--global-batch", "required")


# ---- serve --deployment FILE.yaml ----------------------------------------------------------------

SERVE = ["serve", "--model", "llama3-8b", "--system", "dgx-h100", "--requests", "100"]


def test_deployment_file_holds_any_field_and_given_options_override_it(capsys, tmp_path):
    deployment = tmp_path / "deployment.yaml"
    deployment.write_text("tp: 2\nweights: fp8\nkv_cache: fp8\nmax_batch: 64\nkv_memory_fraction: 0.5\n"
                          "prefill_buckets: [2048, 4096]\ndecode_buckets: 4096,8192\nfrontend: engine\n"
                          "attention_kernel: flash2\n", "utf-8")
    record = run_json(capsys, [*SERVE, "--deployment", str(deployment)])
    assert record["deployment"] == {"tp": 2, "pp": 1, "ep": 1, "attention_dp": 1, "weights": "fp8", "kv_cache": "fp8",
                                    "max_batch": 64,
                                    "kv_memory_fraction": 0.5, "prefill_buckets": [2048, 4096],
                                    "decode_buckets": [4096, 8192], "frontend": "engine",
                                    "attention_kernel": "flash2"}
    overridden = run_json(capsys, [*SERVE, "--deployment", str(deployment), "--tp", "4", "--kv-cache", "bf16",
                                   "--kv-memory-fraction", "0.8", "--max-batch", "128"])
    assert {k: overridden["deployment"][k] for k in ("tp", "weights", "kv_cache", "kv_memory_fraction",
                                                     "max_batch")} == {
        "tp": 4, "weights": "fp8", "kv_cache": "bf16", "kv_memory_fraction": 0.8, "max_batch": 128}
    assert overridden["kv_capacity_tokens"] != record["kv_capacity_tokens"]


@pytest.mark.parametrize(("text", "needles"), [
    ("weight: fp8\n", ("deployment.yaml:weight", "unknown Deployment field", "weights")),
    ("tp: 3\n", ("deployment.yaml:tp", "3", "attention_heads=32")),
    ("weights: int4\n", ("deployment.yaml:weights", "int4", "bf16, fp8, fp4")),
    ("kv_memory_fraction: 2\n", ("deployment.yaml:kv_memory_fraction", "2", "1")),
    ("max_batch: 0\n", ("deployment.yaml:max_batch", "0", ">= 1")),
])
def test_bad_deployment_file_is_one_line(capsys, tmp_path, text, needles):
    deployment = tmp_path / "deployment.yaml"
    deployment.write_text(text, "utf-8")
    assert_refused(*run_cli(capsys, [*SERVE, "--deployment", str(deployment), "--json"]), *needles)


@pytest.mark.parametrize("command", ["train", "search", "reliability", "serve"])
def test_help_keeps_every_option_whole_at_80_columns(capsys, monkeypatch, command):
    monkeypatch.setenv("COLUMNS", "80")
    code, out, err = run_cli(capsys, [command, "--help"])
    assert code == 0, err
    assert max(len(line) for line in out.splitlines()) <= 80
    for option in _options_of(command):
        assert option in out, option
    if command == "train":
        assert "--first-stage-layers <int>" in out and "(default: balanced)" in out


def test_search_table_is_readable_at_80_columns(capsys, monkeypatch):
    monkeypatch.setattr(cli._common, "console", Console(width=80))
    argv = ["search", "--model", "llama3-405b", "--system", "dgx-h100", "--chips", "16384", "--seq", "8192",
            "--global-batch", "2048", "--top", "3"]
    best = run_json(capsys, argv)["best"][0]["plan"]
    code, out, err = run_cli(capsys, argv)
    assert code == 0, err
    assert max(len(line) for line in out.splitlines()) <= 80
    assert f"TP{best['tp']} PP{best['pp']} VP{best['vp']}" in out


def test_search_keeps_fp8_weights_to_its_fp8_plans(capsys):
    argv = ["search", "--model", "llama3-8b", "--system", "dgx-h100", "--chips", "8", "--seq", "4096",
            "--global-batch", "8", "--top", "40"]
    bf16 = run_json(capsys, [*argv, "--precision", "bf16", "--fp8-params"])["best"]
    assert bf16 and not any(r["plan"]["fp8_params"] for r in bf16)  # no fp8 weights in a bf16 plan
    with_fp8_weights = run_json(capsys, [*argv, "--precision", "fp8", "--fp8-params"])["best"]
    assert with_fp8_weights and all(r["plan"]["fp8_params"] for r in with_fp8_weights)

    def key(record: dict) -> str:  # type: ignore[type-arg]
        return json.dumps({k: v for k, v in record["plan"].items() if k != "fp8_params"}, sort_keys=True)

    plain = {key(r): r["memory_bytes_per_chip"] for r in run_json(capsys, [*argv, "--precision", "fp8"])["best"]}
    same = [(r["memory_bytes_per_chip"], plain[key(r)]) for r in with_fp8_weights if key(r) in plain]
    # One bf16 weight copy fewer (Megatron --fp8-param-gather): the setting reached the estimate.
    assert same and all(fp8 < bf16_copy for fp8, bf16_copy in same)


def test_search_refuses_activation_offload_with_the_reason(capsys):
    argv = ["search", "--model", "llama3-8b", "--system", "dgx-h100", "--chips", "8", "--seq", "4096",
            "--global-batch", "8", "--offload-layers", "4"]
    assert_refused(*run_cli(capsys, argv), "--offload-layers", "4", "pp=1")


Q30 = ["--model", "qwen3-30b-a3b", "--system", "dgx-h100", "--chips", "8", "--seq", "4096", "--global-batch", "64"]


def test_offloaded_modules_reach_train_and_search(capsys):
    """``--offload-modules`` (Megatron-Core fine-grained activation offloading) lowers the memory
    of the same plan in ``train``, and ``search`` shares it with every plan that does not
    recompute in full (those keep nothing to offload)."""
    plan = ["--ep", "8", "--recompute", "none"]
    kept = run_json(capsys, ["train", *Q30, *plan])
    offloaded = run_json(capsys, ["train", *Q30, *plan, "--offload-modules", "expert_fc1,moe_act"])
    assert offloaded["plan"]["offload_modules"] == ["expert_fc1", "moe_act"]
    assert offloaded["memory_bytes_per_chip"] < kept["memory_bytes_per_chip"]
    assert offloaded["step_time_s"] == pytest.approx(kept["step_time_s"])  # the copies are not timed
    found = run_json(capsys, ["search", *Q30, "--offload-modules", "moe_act", "--top", "20"])["best"]
    assert found
    for record in found:
        expected = [] if record["plan"]["recompute"] == "full" else ["moe_act"]
        assert record["plan"].get("offload_modules", []) == expected


def test_offloaded_modules_are_refused_with_the_field_and_rule(capsys):
    assert_refused(*run_cli(capsys, ["train", *Q30, "--ep", "8", "--offload-modules", "attn_proj"]),
                   "--offload-modules", "attn_proj", "core_attn")
    assert_refused(*run_cli(capsys, ["search", *Q30, "--recompute", "full", "--offload-modules", "moe_act"]),
                   "offload_modules", "moe_act", "nothing is left to offload")
