"""The CLI driven in-process through ``clusterplan.cli.main``: outputs, defaults and refusals.

Every refusal must be exit code 2 with exactly one ``error:`` line on stderr that names the flag
(or field) and the value, and nothing on stdout.
"""

from __future__ import annotations

import json
import math
import time
from importlib import resources
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from rich.console import Console

from cliutil import run_cli
from clusterplan import cli
from clusterplan.catalog import load_chip

BASE = ["train", "--model", "llama3-8b", "--system", "dgx-h100", "--chips", "8", "--seq", "8192",
        "--global-batch", "64"]




def _no_constants(name: str) -> float:
    raise ValueError(f"not JSON: {name}")


def strict_json(text: str):
    """Parse RFC 8259 JSON: Python's json would otherwise accept NaN and Infinity."""
    return json.loads(text, parse_constant=_no_constants)


def train_result(code: int, out: str, err: str) -> dict:
    """The record of ``train --json``: exit 0 and nothing on stderr when the plan fits in memory;
    exit 1 and one ``error:`` line saying why when it does not (the record is printed all the same)."""
    record = strict_json(out)
    assert isinstance(record, dict)
    if record.get("fits_memory", True):  # other commands' records: exit 0
        assert code == 0, err
        assert err == ""
    else:
        assert code == 1, (code, err)
        assert len(err.splitlines()) == 1 and err.startswith("error: --chips=")
        assert "does not fit in memory" in err and "Traceback" not in err
    return record


def train_json(capsys, *extra: str, base: list[str] = BASE) -> dict:
    return train_result(*run_cli(capsys, [*base, *extra, "--json"]))


def assert_refused(code: int, out: str, err: str, *needles: str) -> str:
    assert code == 2, (code, out, err)
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    line = lines[0]
    assert line.startswith("error:"), line
    assert line.removeprefix("error:").strip()
    assert "Traceback" not in err
    for needle in needles:
        assert needle in line, f"{needle!r} not in {line!r}"
    return line


@pytest.fixture
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rich wraps to the terminal (or $COLUMNS); make table tests independent of both."""
    monkeypatch.setattr(cli._common, "console", Console(width=200))


# ---- train --json ---------------------------------------------------------------------------

TRAIN_KEYS = {"step_time_s", "tokens_per_s_per_chip", "model_tflops_per_chip", "mfu", "hfu",
              "memory_bytes_per_chip", "memory_breakdown", "fits_memory", "time_breakdown_s"}


def test_train_json_is_one_object_with_the_key_figures(capsys):
    record = train_json(capsys)  # the whole of stdout is one JSON document
    assert record.keys() >= TRAIN_KEYS
    assert "time_to_train_s" not in record
    assert record["step_time_s"] > 0
    assert record["tokens_per_s_per_chip"] > 0
    assert record["model_tflops_per_chip"] > 0
    assert 0 < record["mfu"] <= record["hfu"] <= 1
    assert isinstance(record["fits_memory"], bool)
    assert record["chips"] == 8
    # tokens/s per chip follows from the step time
    tokens_per_step = 64 * 8192
    assert record["tokens_per_s_per_chip"] == pytest.approx(
        tokens_per_step / record["step_time_s"] / 8, rel=1e-9)


def test_train_tokens_gives_time_to_train(capsys):
    record = train_json(capsys, "--tokens", "15T")
    assert record.keys() >= TRAIN_KEYS
    expected = 15e12 / (record["tokens_per_s_per_chip"] * 8)
    assert record["time_to_train_s"] == pytest.approx(expected, rel=1e-9)


def test_breakdowns_sum_to_their_totals(capsys):
    for extra in ([], ["--chips", "16", "--tp", "2", "--pp", "2", "--micro-batch", "2"]):
        record = train_json(capsys, *extra)
        times = record["time_breakdown_s"]
        assert all(value >= 0 for value in times.values())
        assert math.fsum(times.values()) == pytest.approx(record["step_time_s"], rel=1e-9)
        memory = record["memory_breakdown"]
        assert all(value >= 0 for value in memory.values())
        assert math.fsum(memory.values()) == pytest.approx(record["memory_bytes_per_chip"], rel=1e-9)


@pytest.mark.parametrize(
    ("chips", "tp", "pp", "cp"),
    [(8, 1, 1, 1), (8, 2, 1, 1), (8, 8, 1, 1), (16, 2, 2, 1), (16, 2, 1, 2), (32, 2, 2, 2)],
)
def test_dp_defaults_to_chips_over_tp_pp_cp(capsys, chips, tp, pp, cp):
    record = train_json(capsys, "--chips", str(chips), "--tp", str(tp), "--pp", str(pp),
                        "--cp", str(cp))
    plan = record["plan"]
    assert (plan["tp"], plan["pp"], plan["cp"]) == (tp, pp, cp)
    assert plan["dp"] == chips // (tp * pp * cp)


def test_consistent_dp_is_accepted(capsys):
    record = train_json(capsys, "--tp", "2", "--dp", "4")
    assert record["plan"]["dp"] == 4


@pytest.mark.parametrize(("tp", "dp"), [(1, 4), (1, 16), (2, 2), (2, 8)])
def test_dp_that_disagrees_with_chips_is_refused(capsys, tp, dp):
    code, out, err = run_cli(capsys, [*BASE, "--tp", str(tp), "--dp", str(dp), "--json"])
    assert_refused(code, out, err, "--dp", str(dp), "chips=8")


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--tp", "2"], True),
        (["--tp", "8"], True),
        (["--tp", "1"], False),
        ([], False),
        (["--tp", "2", "--no-sp"], False),
        (["--tp", "1", "--sp"], True),
    ],
)
def test_sequence_parallelism_default(capsys, extra, expected):
    assert train_json(capsys, *extra)["plan"]["sp"] is expected


def test_chip_override(capsys):
    record = train_json(capsys, "--chip", "h200")
    assert record["chip"] == "h200"


# ---- tables and catalog ---------------------------------------------------------------------


@pytest.mark.usefixtures("wide_console")
def test_train_table(capsys):
    code, out, err = run_cli(capsys, [*BASE, "--zero", "2"])  # ZeRO-2: it fits in memory
    assert code == 0
    assert err == ""
    assert "step time" in out
    assert "memory per chip" in out
    code, out, err = run_cli(capsys, [*BASE, "--zero", "2", "--tokens", "15T"])
    assert code == 0
    assert "time to train" in out


@pytest.mark.usefixtures("wide_console")
@pytest.mark.parametrize(
    ("kind", "names"),
    [
        ("chips", ["trainium2", "h100-sxm"]),
        ("systems", ["trn2-ultraserver", "dgx-h100"]),
        ("models", ["llama3-405b", "llama3-8b"]),
    ],
)
def test_catalog_tables(capsys, kind, names):
    code, out, err = run_cli(capsys, ["catalog", kind])
    assert code == 0
    assert err == ""
    for name in names:
        assert name in out


@pytest.mark.parametrize(("kind", "name"), [("chips", "trainium2"), ("models", "llama3-405b")])
def test_catalog_names_are_not_folded_at_80_columns(capsys, monkeypatch, kind, name):
    monkeypatch.setattr(cli._common, "console", Console(width=80))
    code, out, _ = run_cli(capsys, ["catalog", kind])
    assert code == 0
    assert name in out


@pytest.mark.parametrize(
    ("kind", "name"),
    [("chips", "trainium2"), ("systems", "trn2-ultraserver"), ("models", "llama3-405b")],
)
def test_catalog_json(capsys, kind, name):
    code, out, err = run_cli(capsys, ["catalog", kind, "--json"])
    assert code == 0
    assert err == ""
    document = strict_json(out)
    assert list(document) == [kind]  # one object, keyed by what was listed
    assert name in {record["name"] for record in document[kind]}


# ---- rainier and validate -------------------------------------------------------------------


def progress_only(err: str, command: str) -> None:
    """stderr holds progress lines of ``command`` and nothing else (they start after 2 s)."""
    assert all(line.startswith(f"{command}: ") for line in err.splitlines()), err


def test_rainier_json(capsys, tmp_path):
    code, out, err = run_cli(capsys, ["rainier", "--json", "--report-dir", str(tmp_path)])
    assert code == 0
    progress_only(err, "rainier")
    record = strict_json(out)
    for key in ("chips", "ultraservers", "peak_bf16_eflops", "peak_fp8_eflops", "hbm_bytes",
                "training", "it_mw", "facility_mw", "capex_usd", "cost_per_chip_hour_usd", "fleet"):
        assert key in record
    # the report says what the JSON says
    page = (tmp_path / "rainier.html").read_text(encoding="utf-8")
    markdown = (tmp_path / "rainier.md").read_text(encoding="utf-8")
    assert page.count("Plotly.newPlot(") >= 5 and "<script src" not in page  # offline, interactive
    assert page.index("Summary") < page.index("Assumptions and caveats") < page.index("Training plan")
    for stage in record["growth"]:
        assert f"| {stage['chips']:,} |" in markdown
        assert f"{stage['facility_mw']:,.0f}" in markdown
    assert f"{100 * record['training']['mfu']:.1f} %" in markdown
    assert record["fleet"][-1]["chips"] == pytest.approx(1_000_000, rel=0.01)
    assert record["chips"] == 500_000
    chip = load_chip("trainium2")
    assert record["peak_bf16_eflops"] == pytest.approx(500_000 * chip.peak("bf16") / 1e18, rel=1e-12)
    assert record["peak_fp8_eflops"] == pytest.approx(500_000 * chip.peak("fp8") / 1e18, rel=1e-12)
    assert record["hbm_bytes"] == pytest.approx(500_000 * chip.hbm_bytes, rel=1e-12)
    assert record["ultraservers"] == math.ceil(500_000 / record["scale_up_domain_chips"])
    training = record["training"]
    assert training["step_time_s"] > 0
    assert training["time_to_train_s"] > 0
    assert training["chips"] <= record["chips"]


@pytest.mark.usefixtures("wide_console")
def test_rainier_table(capsys, tmp_path):
    code, out, err = run_cli(capsys, ["rainier", "--report-dir", str(tmp_path)])
    assert code == 0
    progress_only(err, "rainier")
    assert "step time" in out
    assert "power and money" in out and "training runs with failures" in out
    # one set of failure figures, all finite: the training run under the scenario's recovery
    assert "with failures (scenario recovery)" in out and "failures at campus scale" in out
    assert "never" not in out and "default rates" not in out


def test_validate_korthikanti_json(capsys):
    code, out, err = run_cli(capsys, ["validate", "--table", "korthikanti2022", "--json"])
    assert code == 0
    assert err == ""
    record = strict_json(out)
    table = record["tables"]["korthikanti2022"]
    assert list(record["tables"]) == ["korthikanti2022"]
    rows = table["rows"]
    assert rows
    assert math.isfinite(table["mape_pct"])
    assert table["mape_pct"] >= 0
    modelled = [row for row in rows if row.get("skipped") is None]
    assert modelled
    mape = sum(abs(row["error_pct"]) for row in modelled) / len(modelled)
    assert table["mape_pct"] == pytest.approx(mape, rel=1e-9)
    for row in modelled:
        error = 100 * (row["predicted"] - row["published"]) / row["published"]
        assert row["error_pct"] == pytest.approx(error, rel=1e-9, abs=1e-9)


# ---- refusals -------------------------------------------------------------------------------


@pytest.fixture
def yaml_dir(tmp_path: Path) -> Path:
    (tmp_path / "malformed.yaml").write_text("name: x\nlayers: [1, 2\n", encoding="utf-8")
    (tmp_path / "negative.yaml").write_text(
        "name: negative\nlayers: 32\nhidden_size: -4096\nffn_hidden_size: 14336\n"
        "attention_heads: 32\nkv_heads: 8\nvocab_size: 128256\nffn_activation: swiglu\n"
        "source: test fixture\n", encoding="utf-8")
    (tmp_path / "bool-layers.yaml").write_text(
        "name: bool-layers\nlayers: true\nhidden_size: 4096\nffn_hidden_size: 14336\n"
        "attention_heads: 32\nkv_heads: 8\nvocab_size: 128256\nffn_activation: swiglu\n"
        "source: test fixture\n", encoding="utf-8")
    (tmp_path / "number-dropout.yaml").write_text(
        "name: number-dropout\nlayers: 32\nhidden_size: 4096\nffn_hidden_size: 14336\n"
        "attention_heads: 32\nkv_heads: 8\nvocab_size: 128256\nffn_activation: swiglu\ndropout: 1\n"
        "source: test fixture\n", encoding="utf-8")
    (tmp_path / "latin1.yaml").write_bytes("name: caf\xe9\nlayers: 32\n".encode("latin-1"))
    (tmp_path / "laughs.yaml").write_text(LAUGHS, encoding="utf-8")
    (tmp_path / "deep.yaml").write_text("tp: " + "[" * 100_000 + "]" * 100_000 + "\n", encoding="utf-8")
    (tmp_path / "twice.yaml").write_text("tp: 2\ntp: 4\n", encoding="utf-8")
    (tmp_path / "date.yaml").write_text("tp: 2025-13-45\n", encoding="utf-8")
    (tmp_path / "a-file").write_text("not a folder\n", encoding="utf-8")
    (tmp_path / "link.parquet").symlink_to(tmp_path / "a-file")
    rainier = yaml.safe_load((resources.files("clusterplan.catalog") / "scenarios/rainier.yaml").read_text("utf-8"))
    for name, section, change in (("typo", "training", {"tokenz": "15T"}),
                                  ("serving-model", "serving", {"model": "llama9"}),
                                  ("fleet-key", "fleet", {"colour": "blue"})):
        (tmp_path / f"scenario-{name}.yaml").write_text(
            yaml.safe_dump({**rainier, section: {**rainier[section], **change}}), encoding="utf-8")
    sweep = yaml.safe_load((Path(__file__).resolve().parents[1] / "examples/sweep-small.yaml").read_text("utf-8"))
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(sweep), encoding="utf-8")
    (tmp_path / "sweep-fp8.yaml").write_text(
        yaml.safe_dump({**sweep, "systems": ["dgx-h100", "tpu-v4"], "precision": ["bf16", "fp8"]}), encoding="utf-8")
    (tmp_path / "sweep-laughs.yaml").write_text(
        "models: &m [llama3-8b, llama3-70b]\nsystems: *m\nchips: [8]\nseq_len: [8]\nglobal_batch: [8]\n",
        encoding="utf-8")
    return tmp_path


#: "Billion laughs": nine levels of nine aliases of a list expand 1 kB into 9^9 strings.
LAUGHS = 'a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n' + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8))


def _with(**changes: str) -> list[str]:
    """BASE with some options replaced (keys as flags without dashes, '_' for '-')."""
    argv = list(BASE)
    for key, value in changes.items():
        option = "--" + key.replace("_", "-")
        if option in argv:
            argv[argv.index(option) + 1] = value
        else:
            argv += [option, value]
    return argv


ABSURD_CHIPS = str(10**12)
SEARCH_8B = ["search", "--model", "llama3-8b", "--system", "dgx-h100", "--chips", "8", "--seq", "2048",
             "--global-batch", "64"]
RELIABILITY_8B = ["reliability", "--model", "llama3-8b", "--system", "dgx-h100", "--chips", "64"]
SERVE_8B = ["serve", "--model", "llama3-8b", "--system", "dgx-h100", "--requests", "100"]
CAPACITY_8B = ["capacity", "--model", "llama3-8b", "--system", "dgx-h100", "--demand", "1e5", "--slo-ttft", "2s",
               "--slo-tpot", "100ms", "--requests", "100", "--max-chips-per-replica", "8"]

BAD_INPUT = [
    pytest.param(_with(model="llama3-70x"), ("--model", "llama3-70x", "llama3-70b"),
                 id="unknown-model"),
    pytest.param(_with(system="dgx-h10x"), ("--system", "dgx-h10x", "dgx-h100"),
                 id="unknown-system"),
    pytest.param(_with(chip="h100-sxx"), ("--chip", "h100-sxx"), id="unknown-chip"),
    pytest.param(_with(dp="3"), ("--dp", "3", "chips=8"), id="product-not-chips"),
    pytest.param(_with(tp="2", pp="2", dp="4"), ("--dp", "4", "chips=8"),
                 id="product-not-chips-tp-pp"),
    pytest.param(_with(tp="3"), ("--chips", "8", "tp*pp*cp"), id="chips-not-divisible"),
    pytest.param(_with(chips="3", tp="3"), ("--tp", "3", "attention_heads"),
                 id="heads-not-divisible-by-tp"),
    pytest.param(_with(chips="6", pp="3", vp="2"), ("--pp", "3", "layers=32"),
                 id="layers-not-divisible-by-pp"),
    pytest.param(_with(chips="64", pp="64"), ("--pp", "64", "layers=32"), id="pp-exceeds-layers"),
    pytest.param(_with(chips="2", pp="2", vp="3"), ("--pp", "layers=32", "pp*vp"),
                 id="layers-not-divisible-by-pp-vp"),
    pytest.param(_with(vp="2"), ("--vp", "2", "pp"), id="vp-without-pp"),
    pytest.param(_with(global_batch="60"), ("--global-batch", "60", "micro_batch*dp"),
                 id="batch-not-divisible-by-dp"),
    pytest.param(_with(micro_batch="16"), ("--global-batch", "64", "micro_batch*dp"),
                 id="batch-not-divisible-by-micro-batch"),
    pytest.param(_with(cp="2", chips="8", seq="8191"), ("--cp", "2", "8191"),
                 id="seq-not-divisible-by-2cp"),
    pytest.param(_with(ep="2"), ("--ep", "2"), id="ep-on-dense-model"),
    pytest.param(_with(chips="-8"), ("--chips", "-8"), id="negative-chips"),
    pytest.param(_with(chips="0"), ("--chips", "0"), id="zero-chips"),
    pytest.param(_with(seq="0"), ("--seq", "0"), id="zero-seq"),
    pytest.param(_with(seq="-5"), ("--seq", "-5"), id="negative-seq"),
    pytest.param(_with(global_batch="0"), ("--global-batch", "0"), id="zero-global-batch"),
    pytest.param(_with(micro_batch="0"), ("--micro-batch", "0"), id="zero-micro-batch"),
    pytest.param(_with(tp="-2"), ("--tp", "-2"), id="negative-tp"),
    pytest.param(_with(pp="0"), ("--pp", "0"), id="zero-pp"),
    pytest.param(_with(dp="0"), ("--dp", "0"), id="zero-dp"),
    pytest.param(_with(first_stage_layers="-1", pp="2", chips="8"), ("--first-stage-layers", "-1"),
                 id="negative-first-stage-layers"),
    pytest.param(_with(chips=ABSURD_CHIPS), ("--chips", ABSURD_CHIPS), id="absurd-chips"),
    pytest.param(_with(chips=str(10**8), dp=str(10**9)), ("--dp", str(10**9)), id="absurd-dp"),
    pytest.param(_with(seq=str(10**9)), ("--seq", str(10**9)), id="absurd-seq"),
    pytest.param(_with(global_batch=str(10**9)), ("--global-batch", str(10**9)),
                 id="absurd-global-batch"),
    pytest.param(_with(micro_batch=str(10**6)), ("--micro-batch", str(10**6)),
                 id="absurd-micro-batch"),
    pytest.param(_with(tp=str(10**22)), ("tp", str(10**22)), id="absurd-tp"),
    pytest.param(_with(recompute="bogus"), ("--recompute", "bogus"), id="bad-recompute"),
    pytest.param(_with(recompute_modules="attn"), ("--recompute-modules", "attn", "core_attn"),
                 id="bad-recompute-module"),
    pytest.param(_with(recompute="full", recompute_modules="layernorm"),
                 ("--recompute-modules", "layernorm", "selective"), id="recompute-modules-without-selective"),
    pytest.param(_with(recompute_modules="moe_act"), ("--recompute-modules", "moe_act", "no experts"),
                 id="moe-act-recompute-on-dense"),
    pytest.param(_with(precision="bogus"), ("--precision", "bogus"), id="bad-precision"),
    pytest.param(_with(precision="fp32"), ("--precision", "fp32"), id="fp32-precision"),
    pytest.param(_with(zero="7"), ("--zero", "7"), id="zero-stage-7"),
    pytest.param(_with(zero="-1"), ("--zero", "-1"), id="zero-stage-negative"),
    pytest.param(_with(tokens="15X"), ("--tokens", "15X"), id="tokens-bad-unit"),
    pytest.param(_with(tokens="15TB"), ("--tokens", "15TB"), id="tokens-bytes-unit"),
    pytest.param(_with(tokens="lots"), ("--tokens", "lots"), id="tokens-not-a-number"),
    pytest.param(_with(tokens="-5T"), ("--tokens", "-5T"), id="tokens-negative"),
    pytest.param(_with(tokens="0"), ("--tokens", "0"), id="tokens-zero"),
    pytest.param(_with(tokens="1e400"), ("--tokens", "1e400"), id="tokens-overflow"),
    pytest.param(_with(model="{tmp}/missing.yaml"), ("--model", "missing.yaml", "cannot read"),
                 id="model-path-missing"),
    pytest.param(_with(model="{tmp}/malformed.yaml"), ("--model", "malformed.yaml", "YAML"),
                 id="model-yaml-malformed"),
    pytest.param(_with(model="{tmp}/negative.yaml"), ("--model", "hidden_size", "-4096"),
                 id="model-yaml-negative-hidden-size"),
    pytest.param(_with(system="{tmp}/malformed.yaml"), ("--system", "malformed.yaml"),
                 id="system-yaml-malformed"),
    pytest.param(_with(chip="{tmp}/negative.yaml"), ("--chip", "negative.yaml"),
                 id="chip-yaml-wrong-schema"),
    pytest.param(["catalog", "gpus"], ("kind", "gpus"), id="unknown-catalog-kind"),
    pytest.param(["validate", "--table", "nosuch"], ("--table", "nosuch", "korthikanti2022"),
                 id="unknown-validate-table"),
    pytest.param(["rainier", "--scenario", "nosuch"], ("scenario", "nosuch"),
                 id="unknown-scenario"),
    pytest.param(["rainier", "--scenario", "{tmp}/malformed.yaml"], ("scenario", "malformed.yaml"),
                 id="malformed-scenario"),
    # issue #14: precisions a chip has no units for are refused at the edge, not run at bf16
    pytest.param(_with(system="tpu-v4", precision="fp8"), ("--precision", "fp8", "tpu-v4"),
                 id="fp8-on-tpu-v4"),
    pytest.param(_with(precision="fp4"), ("--precision", "fp4", "h100-sxm", "bf16, fp8"), id="fp4-on-h100"),
    pytest.param(_with(chip="a100-80gb", precision="fp8"), ("--precision", "fp8", "a100-80gb"),
                 id="fp8-on-a100"),
    pytest.param([*SEARCH_8B, "--system", "tpu-v4", "--any-shape", "--precision", "bf16,fp8"],
                 ("--precision", "fp8", "tpu-v4"), id="search-fp8-on-tpu-v4"),
    pytest.param([*RELIABILITY_8B, "--tokens", "1T", "--precision", "fp4"], ("--precision", "fp4", "h100-sxm"),
                 id="reliability-fp4-on-h100"),
    pytest.param([*SERVE_8B, "--system", "tpu-v4", "--weights", "fp8"], ("--weights", "fp8", "tpu-v4"),
                 id="serve-fp8-weights-on-tpu-v4"),
    pytest.param([*CAPACITY_8B, "--system", "tpu-v4", "--weights", "bf16,fp8"], ("--weights", "fp8", "tpu-v4"),
                 id="capacity-fp8-weights-on-tpu-v4"),
    pytest.param(["sweep", "{tmp}/sweep-fp8.yaml"], ("precision[0]", "fp8", "tpu-v4"), id="sweep-fp8-on-tpu-v4"),
    # input files: types, encodings, YAML aliases, depth, duplicate keys, size
    pytest.param(_with(model="{tmp}/bool-layers.yaml"), ("--model", "layers", "not true"),
                 id="model-yaml-layers-true"),
    pytest.param(_with(model="{tmp}/number-dropout.yaml"), ("--model", "dropout", "true or false", "1"),
                 id="model-yaml-dropout-number"),
    pytest.param(_with(model="{tmp}/latin1.yaml"), ("--model", "latin1.yaml", "not UTF-8", "0xe9"),
                 id="model-yaml-not-utf8"),
    pytest.param(_with(plan="{tmp}/laughs.yaml"), ("--plan", "laughs.yaml", "alias"), id="plan-billion-laughs"),
    pytest.param(_with(plan="{tmp}/deep.yaml"), ("--plan", "deep.yaml", "nested deeper than 64"),
                 id="plan-nested-100000-deep"),
    pytest.param(_with(plan="{tmp}/twice.yaml"), ("--plan", "twice.yaml", "'tp' is given twice"),
                 id="plan-key-twice"),
    pytest.param(_with(plan="{tmp}/date.yaml"), ("--plan", "date.yaml", "malformed YAML"), id="plan-bad-date"),
    pytest.param(_with(plan="/dev/zero"), ("--plan", "/dev/zero", "larger than"), id="plan-dev-zero"),
    pytest.param(_with(model="{tmp}/" + "m" * 5000), ("--model", "characters)"), id="model-name-5000-chars"),
    pytest.param(["sweep", "{tmp}/sweep-laughs.yaml"], ("sweep", "alias of a list or mapping (*m)"), id="sweep-alias"),
    pytest.param(["rainier", "--scenario", "{tmp}/laughs.yaml"], ("scenario", "alias"), id="scenario-laughs"),
    # scenarios: every key known, the whole file checked before any search
    pytest.param(["rainier", "--scenario", "{tmp}/scenario-typo.yaml"],
                 ("scenario.training.tokenz", "unknown key", "tokens"), id="scenario-unknown-key"),
    pytest.param(["rainier", "--scenario", "{tmp}/scenario-serving-model.yaml"],
                 ("scenario.serving.model", "llama9", "unknown model"), id="scenario-bad-serving-model"),
    pytest.param(["rainier", "--scenario", "{tmp}/scenario-fleet-key.yaml"], ("colour", "Extra inputs"),
                 id="scenario-bad-fleet-section"),
    # reliability: unbounded Monte Carlo work is refused before it starts
    pytest.param([*RELIABILITY_8B, "--tokens", "1e30", "--trials", "1"], ("interruptions",),
                 id="monte-carlo-1e30-tokens"),
    pytest.param([*RELIABILITY_8B, "--duration", "1e9y", "--trials", "1"], ("interruptions",),
                 id="monte-carlo-1e9-years"),
    pytest.param([*RELIABILITY_8B, "--duration", "100y", "--trials", "1000000"],
                 ("--trials", "1000000", "interruptions"), id="monte-carlo-1e6-trials-100-years"),
    pytest.param([*RELIABILITY_8B, "--tokens", "15T", "--storage-bandwidth", "0TB/s"],
                 ("--storage-bandwidth", "> 0"), id="storage-bandwidth-zero"),
    # serving simulations: bounded requests
    pytest.param([*CAPACITY_8B, "--requests", "1000000"], ("--requests", "1000000", "--top"),
                 id="capacity-1e6-requests"),
    pytest.param([*SERVE_8B, "--requests", "1000000"], ("--requests", "1000000"), id="serve-1e6-requests"),
    # outputs: checked before any work
    pytest.param(["rainier", "--report-dir", "{tmp}/a-file"], ("--report-dir", "a-file", "not a folder"),
                 id="rainier-report-dir-is-a-file"),
    pytest.param(["rainier", "--report-dir", "{tmp}/a-file/sub"], ("--report-dir", "a-file is not a folder"),
                 id="rainier-report-dir-under-a-file"),
    pytest.param(["fleet", "amazon-2025", "--report-dir", "{tmp}/a-file"], ("--report-dir", "not a folder"),
                 id="fleet-report-dir-is-a-file"),
    pytest.param(["sweep", "{tmp}/sweep.yaml", "--output", "/dev/null"], ("--output", "/dev/null", "regular file"),
                 id="sweep-output-device"),
    pytest.param(["sweep", "{tmp}/sweep.yaml", "--output", "{tmp}/link.parquet"], ("--output", "symbolic link"),
                 id="sweep-output-symlink"),
    pytest.param(["sweep", "{tmp}/sweep.yaml", "--output", "{tmp}"], ("--output", "folder"),
                 id="sweep-output-folder"),
    pytest.param(["sweep", "{tmp}/sweep.yaml", "--max-points", "7"], ("sweep", "8 points", "--max-points=7"),
                 id="sweep-too-many-points"),
    pytest.param(["sweep", "{tmp}/sweep.yaml", "--executor", "ray", "--ray-address", "nonsense"],
                 ("--ray-address", "nonsense", "host:port"), id="ray-address-malformed"),
    pytest.param(["sweep", "{tmp}/sweep.yaml", "--executor", "ray", "--ray-address", "127.0.0.1:1"],
                 ("--ray-address", "127.0.0.1:1", "cannot connect"), id="ray-address-unreachable"),
]


@pytest.mark.parametrize(("argv", "needles"), BAD_INPUT)
@pytest.mark.parametrize("as_json", [True, False], ids=["json", "table"])
def test_bad_input_is_one_error_line_and_exit_2(capsys, yaml_dir, argv, needles, as_json):
    argv = [part.replace("{tmp}", str(yaml_dir)) for part in argv]
    if as_json:
        argv = [*argv, "--json"]
    before = sorted(p.name for p in yaml_dir.iterdir())
    started = time.perf_counter()
    line = assert_refused(*run_cli(capsys, argv), *needles)
    assert time.perf_counter() - started < 30  # refused before any real work
    assert len(line) < 600  # values are shortened (~200 characters), never echoed whole
    assert sorted(p.name for p in yaml_dir.iterdir()) == before  # nothing written


@pytest.mark.parametrize(
    ("argv", "needles"),
    [
        pytest.param(_with(tp="2.5"), ("--tp",), id="non-integer-tp"),
        pytest.param(_with(chips="eight"), ("--chips",), id="non-integer-chips"),
        pytest.param([*BASE, "--frobnicate", "1"], ("--frobnicate",), id="unknown-option"),
        pytest.param(BASE[:-2], ("--global-batch",), id="missing-option"),
        pytest.param(["catalog"], ("kind",), id="missing-argument"),
        pytest.param(["nosuch"], ("nosuch",), id="unknown-command"),
        pytest.param([*BASE, "--tp"], ("--tp",), id="option-without-value"),
    ],
)
def test_usage_errors_are_one_error_line_and_exit_2(capsys, argv, needles):
    assert_refused(*run_cli(capsys, argv), *needles)


@pytest.mark.parametrize(("flag", "value"), [("tp", "2.5"), ("chips", "eight")])
def test_non_integer_refusal_names_the_value(capsys, flag, value):
    assert_refused(*run_cli(capsys, _with(**{flag: value})), f"--{flag}", value)


def test_rainier_scenario_with_bad_growth_is_refused(capsys, tmp_path):
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text("system: trn2-ultraserver\nchips: 64\ngrowth: [5]\n", encoding="utf-8")
    try:
        result = run_cli(capsys, ["rainier", "--scenario", str(scenario), "--json"])
    except Exception as error:  # the crash escapes main(): the contract is broken
        pytest.fail(f"uncaught {type(error).__name__}: {error}")
    assert_refused(*result, "growth")


def test_no_arguments_prints_help(capsys):
    code, out, _ = run_cli(capsys, [])
    assert code == 0
    assert "train" in out


# ---- property: any integers either work or are refused cleanly ------------------------------

RANDOM_INT = st.one_of(
    st.integers(min_value=-3, max_value=9),
    st.sampled_from([16, 32, 64, 128, 256, 8192]),
    st.integers(min_value=-(10**13), max_value=10**13),
)


@st.composite
def train_sizes(draw: st.DrawFn) -> dict[str, int]:
    """Mostly-valid sizes (chips = tp*pp*dp, batch a multiple of micro_batch*dp), each of which
    may be replaced by an arbitrary integer, so both outcomes are exercised."""
    tp = draw(st.sampled_from([1, 2, 4, 8]))
    pp = draw(st.sampled_from([1, 2, 4]))
    dp = draw(st.integers(min_value=1, max_value=16))
    micro_batch = draw(st.sampled_from([1, 2]))
    sizes = {"chips": tp * pp * dp, "tp": tp, "pp": pp,
             "global_batch": micro_batch * dp * draw(st.integers(min_value=1, max_value=8)),
             "seq": draw(st.sampled_from([512, 2048, 8192])), "micro_batch": micro_batch}
    for name in sizes:
        if draw(st.integers(min_value=0, max_value=9)) == 0:
            sizes[name] = draw(RANDOM_INT)
    return sizes


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sizes=st.one_of(train_sizes(), st.fixed_dictionaries(
    dict.fromkeys(("chips", "tp", "pp", "global_batch", "seq", "micro_batch"), RANDOM_INT))))
def test_random_integers_succeed_or_are_refused_cleanly(capsys, sizes):
    argv = ["train", "--model", "llama3-8b", "--system", "dgx-h100", "--json"]
    for name, value in sizes.items():
        argv += ["--" + name.replace("_", "-"), str(value)]
    code, out, err = run_cli(capsys, argv)
    event(f"exit {code}")
    if code in (0, 1):  # 1: a valid plan that does not fit in memory (the record is printed too)
        assert err == "" if code == 0 else err.startswith("error: --chips=")
        record = strict_json(out)
        assert record["fits_memory"] is (code == 0)
        plan = record["plan"]
        assert plan["tp"] * plan["pp"] * plan["cp"] * plan["dp"] == sizes["chips"]
        assert math.isfinite(record["step_time_s"])
        assert record["step_time_s"] > 0
        assert math.fsum(record["time_breakdown_s"].values()) == pytest.approx(
            record["step_time_s"], rel=1e-9)
    else:
        assert_refused(code, out, err)


def test_train_states_the_chips_fitted_sustained_clock(capsys):
    """A GB200 estimate runs its kernels at GB200's fitted sustained clock and says so (JSON
    field and a table row); an H100 one, whose family fits none, at the datasheet's, silently."""
    from clusterplan.catalog import load_efficiency

    plan = ["--model", "llama3-8b", "--chips", "8", "--precision", "fp8", "--global-batch", "64", "--seq", "8192"]
    code, out, _ = run_cli(capsys, ["train", *plan, "--system", "gb200-nvl72", "--json"])
    assert code == 0
    fitted = load_efficiency("blackwell").sustained_clock["gb200"]
    assert json.loads(out)["sustained_clock"] == fitted != 1.0
    code, out, _ = run_cli(capsys, ["train", *plan, "--system", "gb200-nvl72"])
    assert code == 0 and f"{fitted:.2f} of the datasheet's" in out
    code, out, _ = run_cli(capsys, ["train", *plan, "--system", "dgx-h100", "--json"])
    assert code == 0 and json.loads(out)["sustained_clock"] == 1.0
    code, out, _ = run_cli(capsys, ["train", *plan, "--system", "dgx-h100"])
    assert "sustained clock" not in out


def test_serve_states_the_chips_fitted_sustained_clock(capsys):
    from clusterplan.catalog import load_efficiency

    code, out, _ = run_cli(capsys, ["serve", "--model", "llama3-8b", "--system", "gb200-nvl72", "--json"])
    assert code == 0
    assert json.loads(out)["sustained_clock"] == load_efficiency("blackwell").sustained_clock["gb200"] != 1.0
