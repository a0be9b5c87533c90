"""Every Plan field reachable from the CLI (options and --plan FILE.yaml), the automatic
balanced layer split, the settings a user left open (``assumed``), and Korthikanti et al.
2022 Table 5 run through ``clusterplan train`` as a user would."""

from __future__ import annotations

import csv
from importlib import resources
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from cliutil import run_cli
from clusterplan import cli
from clusterplan.specs import Plan
from clusterplan.validation.cases import korthikanti2022
from clusterplan.validation.harness import run_case
from test_cli import assert_refused, strict_json

L405 = ["train", "--model", "llama3-405b", "--system", "dgx-h100", "--chips", "16384", "--tp", "8", "--pp", "16",
        "--seq", "8192", "--global-batch", "2048"]
L8 = ["train", "--model", "llama3-8b", "--system", "dgx-h100", "--chips", "8", "--seq", "8192",
      "--global-batch", "64"]


def run_json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> dict:
    code, out, err = run_cli(capsys, [*argv, "--json"])
    assert code == 0, err
    assert err == ""
    record = strict_json(out)
    assert isinstance(record, dict)
    return record


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
