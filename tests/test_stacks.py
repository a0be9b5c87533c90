"""Engine stacks as a deployment setting (issue #17 leftovers: ``--stack``): each engine's
documented defaults (inference/stacks.py), ``None`` leaving today's behaviour."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cliutil import run_cli
from clusterplan.catalog import hardware_for, load_chip, load_model, load_system
from clusterplan.inference.stacks import apply_stack, generate_buckets, sglang_mem_fraction_static
from clusterplan.inference.step import Deployment, ReplicaModel

LLAMA8B = load_model("llama3-8b")
H100 = hardware_for(load_system("dgx-h100"))
SERVE = ["serve", "--model", "llama3-8b", "--system", "dgx-h100", "--json"]


def _replica(**deployment: object) -> ReplicaModel:
    return ReplicaModel(LLAMA8B, H100, Deployment.model_validate(deployment))


def test_no_stack_is_todays_kv_rule_exactly() -> None:
    replica = _replica()
    assert replica.deployment.stack is None and replica.deployment.max_batch == 2048
    free = H100.chip.hbm_bytes - replica.weight_bytes_per_chip - H100.efficiency.reserved_bytes
    assert replica.kv_capacity_tokens == int(free * 0.9 / replica.kv_per_token)


def test_trtllm_reads_the_fraction_of_free_memory_and_measures_at_the_engine() -> None:
    plain, trtllm = _replica(), _replica(stack="trtllm")
    assert trtllm.kv_capacity_tokens == plain.kv_capacity_tokens
    assert trtllm.deployment.frontend == "engine" and trtllm.request_latency_s == 0.0
    assert plain.request_latency_s > 0.0


def test_vllm_reads_the_fraction_of_the_whole_device() -> None:
    vllm = _replica(stack="vllm")
    budget = 0.9 * H100.chip.hbm_bytes - vllm.weight_bytes_per_chip - H100.efficiency.reserved_bytes
    assert vllm.kv_budget_bytes(vllm.weight_bytes_per_chip) == pytest.approx(budget)
    assert vllm.kv_capacity_tokens < _replica().kv_capacity_tokens  # the weights come out of the 90 %
    assert vllm.deployment.max_batch == 1024  # >= 70 GiB, not an A100


@pytest.mark.parametrize(("chip", "max_batch"), [("h100-sxm", 1024), ("h200", 1024), ("a100-80gb", 256),
                                                 ("a100-40gb", 256)])
def test_vllm_max_num_seqs_follows_device_memory_and_name(chip: str, max_batch: int) -> None:
    hardware = hardware_for(load_system("dgx-h100"), load_chip(chip))
    deployment, record = apply_stack(Deployment(stack="vllm"), hardware)
    assert deployment.max_batch == max_batch and record is not None and "max_batch" in record["applied"]


def test_sglang_mem_fraction_static_follows_its_heuristic() -> None:
    # H100 (81,559 MiB): chunked prefill 8192, CUDA-graph batch 256 (TP < 4) or 512;
    # reserved 512 + 1.5 x 8192 + 2 x 256 + 1024 x 1/8 = 13,440 MiB -> (81559 - 13440) / 81559
    assert sglang_mem_fraction_static(H100.chip.hbm_bytes, 1, 1, 1) == 0.835
    assert sglang_mem_fraction_static(H100.chip.hbm_bytes, 8, 1, 1) == 0.818  # 14,848 MiB
    assert sglang_mem_fraction_static(H100.chip.hbm_bytes, 1, 1, 1, "eagle") == 0.81  # + 2 GiB
    assert sglang_mem_fraction_static(24 * 2**30, 1, 1, 1) == round((24576 - 3760) / 24576, 3)  # 4090-class
    sglang = _replica(stack="sglang")
    assert sglang.deployment.kv_memory_fraction == 0.835 and sglang.deployment.max_batch == 2048


def test_fields_given_override_the_stack() -> None:
    replica = _replica(stack="vllm", max_batch=64, kv_memory_fraction=0.8, frontend="engine")
    d = replica.deployment
    assert (d.max_batch, d.kv_memory_fraction, d.frontend) == (64, 0.8, "engine")
    budget = 0.8 * H100.chip.hbm_bytes - replica.weight_bytes_per_chip - H100.efficiency.reserved_bytes
    assert replica.kv_budget_bytes(replica.weight_bytes_per_chip) == pytest.approx(budget)


def test_neuron_buckets_are_nxd_autobucketing() -> None:
    # NxD Inference's own unit test of generate_buckets
    assert generate_buckets(128, 128) == (128,)
    assert generate_buckets(128, 512) == (128, 256, 512)
    assert generate_buckets(64, 256) == (64, 128, 256)
    trn2 = hardware_for(load_system("trn2"))
    deployment, _ = apply_stack(Deployment(stack="neuron"), trn2, 3000, 500)
    assert deployment.prefill_buckets == (128, 256, 512, 1024, 2048, 3000)
    assert deployment.decode_buckets == (128, 256, 512, 1024, 2048, 3500)


def test_serve_reports_the_stack_and_its_resolved_defaults(capsys: pytest.CaptureFixture[str],
                                                           tmp_path: Path) -> None:
    code, out, _ = run_cli(capsys, [*SERVE, "--stack", "vllm"])
    assert code == 0
    record = json.loads(out)
    assert record["stack"]["name"] == "vllm" and record["stack"]["kv_budget"] == "total"
    assert record["deployment"]["max_batch"] == 1024 and record["stack"]["defaults"]["max_batch"] == 1024
    assert "vllm" in record["stack"]["source"].lower()
    code, plain, _ = run_cli(capsys, SERVE)
    assert code == 0 and "stack" not in json.loads(plain)
    path = tmp_path / "deploy.yaml"
    path.write_text("stack: vllm\n")
    code, by_file, _ = run_cli(capsys, [*SERVE, "--deployment", str(path)])
    assert code == 0 and by_file == out


@pytest.mark.parametrize(("argv", "rule"), [(["--stack", "tgi"], "must be one of"),
                                            (["--stack", "neuron"], "runs on AWS chips")])
def test_bad_stack_is_refused_in_one_line(capsys: pytest.CaptureFixture[str], argv: list[str], rule: str) -> None:
    code, out, err = run_cli(capsys, [*SERVE, *argv])
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "--stack" in err and rule in err, err


def test_capacity_runs_every_candidate_on_the_stack(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, ["capacity", "--model", "llama3-8b", "--system", "dgx-h100", "--demand", "2e5",
                                    "--slo-ttft", "1000", "--slo-tpot", "50", "--requests", "200",
                                    "--max-chips-per-replica", "8", "--top", "1", "--stack", "vllm", "--json"])
    assert code == 0
    record = json.loads(out)
    assert record["stack"] == "vllm" and record["best"]["deployment"]["max_batch"] == 1024
    assert record["best"]["stack"]["kv_budget"] == "total"
    code, _, err = run_cli(capsys, ["capacity", "--model", "llama3-8b", "--system", "dgx-h100", "--demand", "2e5",
                                    "--slo-ttft", "1000", "--slo-tpot", "50", "--stack", "neuron"])
    assert code == 2 and "--stack" in err and len(err.strip().splitlines()) == 1


def test_the_stack_sets_the_kv_admission_unless_given(capsys: pytest.CaptureFixture[str]) -> None:
    """vLLM admits optimistically and preempts; TensorRT-LLM reserves the whole output
    (GUARANTEED_NO_EVICT). An offline run whose outputs outgrow the KV cache shows it: vLLM's
    default admits more sequences, preempts some, and finishes sooner; ``--admission`` wins."""
    run = [*SERVE, "--input-tokens", "128", "--output-tokens", "4096", "--offline", "--requests", "600"]
    code, out, _ = run_cli(capsys, [*run, "--stack", "vllm"])
    assert code == 0
    vllm = json.loads(out)
    assert vllm["stack"]["admission"] == "optimistic" and vllm["simulation"]["admission"] == "optimistic"
    assert vllm["replay"]["preemptions"] > 0
    code, out, _ = run_cli(capsys, [*run, "--stack", "vllm", "--admission", "reserve"])
    reserved = json.loads(out)
    assert "admission" not in reserved.get("simulation", {}) and reserved["replay"]["preemptions"] == 0
    assert vllm["replay"]["mean_batch"] > reserved["replay"]["mean_batch"]
    assert vllm["replay"]["output_tokens_per_s"] > reserved["replay"]["output_tokens_per_s"]
    code, out, _ = run_cli(capsys, [*run, "--stack", "trtllm"])
    trtllm = json.loads(out)
    assert trtllm["stack"]["admission"] == "reserve" and trtllm["replay"]["preemptions"] == 0
