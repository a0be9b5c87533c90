"""Serving rows of inference_published.csv: each predicted from the row's own deployment.

* ``inference_throughput``: TensorRT-LLM offline (saturated) output tokens/s per replica on H100,
  predicted by the analytic continuous-batching model of the row's finite benchmark run
  (``ReplicaModel.offline_throughput`` with the published ``num_requests``: trtllm-bench reports
  total output tokens over the run's wall time, the last partial wave included).
* ``inference_latency``: latency rows: AWS Neuron single-request TTFT and TPOT on Trainium2
  (one prefill; one decode step). Rows with draft-model speculative decoding: the TTFT (a
  prefill of target and draft); their TPOT needs an acceptance rate none of them publishes.
* ``inference_server``: TensorRT-LLM online-serving rows at a request rate on H100, replayed
  through the request-level simulator. They join the serving calibration stage: fitted on the
  offline rows alone, the H100 step overhead came out at 10 ms (absorbing a TP-scaling error of
  the throughput rows) and these rows' TPOT at +60-130 %; fitted jointly it is 0.65 ms.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from importlib import resources
from typing import Any

import numpy as np
from pydantic import ValidationError

from clusterplan.catalog import hardware_for, load_efficiency, load_model, load_system
from clusterplan.costs.compute import Efficiency
from clusterplan.errors import SpecError
from clusterplan.inference.acceleration import Speculation, serving_replica
from clusterplan.inference.serving import ServingLoad, max_rate_at_slo, sample, simulate
from clusterplan.inference.stacks import TRTLLM_ATTENTION
from clusterplan.inference.step import Deployment, ReplicaModel
from clusterplan.inference.workload import offline
from clusterplan.specs import Model
from clusterplan.training.step import Hardware
from clusterplan.validation.bands import WIDE_EP_TABLE
from clusterplan.validation.case import Case
from clusterplan.validation.cases import stack_epochs
from clusterplan.validation.inference_neuron import TABLE as NEURON_TRN1_TABLE
from clusterplan.validation.inference_neuron import neuron_trn1_serving

_MODELS = {"llama-3.1-8b-instruct": "llama3-8b", "llama-3.1-70b-instruct": "llama3-70b",
           "llama-3.3-70b-instruct": "llama3-70b", "llama-3-70b-instruct": "llama3-70b",
           "llama-3.1-405b-instruct": "llama3-405b", "deepseek-r1": "deepseek-v3", "deepseek-v3": "deepseek-v3",
           # the wide-EP table's checkpoints (DeepSeek-V3's architecture; its columns give the formats)
           "deepseek-r1-0528-fp4": "deepseek-v3", "deepseek-r1-fp4": "deepseek-v3", "deepseekv3-nvfp4": "deepseek-v3"}
_SYSTEMS = {"H100-SXM-80GB": "dgx-h100", "Trainium2": "trn2"}

#: TensorRT-LLM's KV-cache share of the free GPU memory when a run does not set it: the default
#: of ``trtllm-bench --kv_cache_free_gpu_mem_fraction`` and of ``KvCacheConfig``
#: (``free_gpu_memory_fraction``). The perf-overview pages from v0.17 on say their runs set 0.95
#: "in a majority of cases" (``kv_cache_free_gpu_mem_fraction 0.95`` in the row notes); the
#: v0.14.0 page's commands do not set it. Source: TensorRT-LLM docs/source/performance/
#: perf-overview.md (v0.20: "a higher KV cache percentage by setting
#: --kv_cache_free_gpu_mem_fraction 0.95 ... than the default setting of 0.90").
TRTLLM_DEFAULT_KV_FRACTION = 0.90


def _rows() -> list[dict[str, str]]:
    text = resources.files("clusterplan.validation").joinpath("tables/inference_published.csv").read_text("utf-8")
    return list(csv.DictReader(text.splitlines()))


def _weights(value: str) -> str:
    upper = value.upper()
    return "fp8" if "FP8" in upper else "fp4" if "FP4" in upper else "bf16"


def _buckets(notes: str, kind: str) -> tuple[int, ...]:
    """The row's compiled Neuron buckets of one kind as its notes print them ("CE buckets
    2048/4096/10240/12288", "TG 2048/4096/8192/12800"): context encoding (``CE``) or token
    generation (``TG``). Empty when the row states none."""
    found = re.search(rf"\b{kind}(?: buckets?)? (\d+(?:/\d+)*)", notes)
    return tuple(int(b) for b in found.group(1).split("/")) if found else ()


def _speculation(row: dict[str, str]) -> Speculation | None:
    """The row's draft-model speculative decoding ("fused speculation, draft Llama-3.2-1B-Instruct,
    speculation length 7"), or None. The acceptance is not published with these rows; only their
    TTFT is predicted (a prefill of target and draft, which no acceptance changes), so the spec
    carries 0 and no TPOT case reads it (:func:`_not_modelled`)."""
    text = row["speculative_decoding"].strip()
    if not text or text.lower() == "no":
        return None
    draft = re.search(r"draft (\S+)", text)
    length = re.search(r"speculation length (\d+)", text)
    if draft is None or length is None:
        raise ValueError(f"speculative decoding {text!r}: draft model or speculation length not stated")
    return Speculation(method="draft", draft=draft.group(1).rstrip(",").lower(), tokens=int(length.group(1)),
                       acceptance=0.0)


def _baseline(row: dict[str, str]) -> dict[str, str]:
    """The same publication's configuration without speculative decoding (same source group,
    model, hardware, request shape and engine version; not superseded): a speculative row whose
    notes say "same as baseline plus" the draft compiles the baseline's buckets."""
    for other in _rows():
        if (other["speculative_decoding"].strip().lower() in ("", "no") and "SUPERSEDED" not in other["notes"]
                and all(other[key] == row[key] for key in ("source_group", "model", "hardware", "input_tokens",
                                                             "output_tokens", "engine_version"))):
            return other
    return row


def _replica(row: dict[str, str], efficiency: Efficiency) -> ReplicaModel:
    model = load_model(_MODELS[row["model"].lower()])
    system = load_system(_SYSTEMS[row["hardware"]])
    base = hardware_for(system)
    hardware = Hardware(system=system, chip=base.chip, efficiency=efficiency)
    weights = _weights(row["precision_weights"])
    kv = "fp8" if ("FP8" in row["precision_kv"].upper() or (not row["precision_kv"] and weights == "fp8")) else "bf16"
    tp = int(row["tensor_parallel"] or row["chips"] or 1)
    chips = int(row["chips"] or tp)
    if row["hardware"] == "Trainium2":
        tp = chips  # Neuron counts TP in logical NeuronCores (4 per chip at LNC=2): 64 = 16 chips
    pp = int(row["pipeline_parallel"] or 1) if row["hardware"] != "Trainium2" else 1
    max_batch = int(row["max_batch_size_per_replica"]) if row["max_batch_size_per_replica"] else 2048
    speculation = _speculation(row)
    notes = _baseline(row)["notes"] if speculation is not None and not _buckets(row["notes"], "CE") else row["notes"]
    layout = {"tp": tp, **attention_dp_layout(row, model, chips // pp)}
    deployment = Deployment(**layout, pp=pp, weights=weights, kv_cache=kv, max_batch=max_batch,
                            kv_memory_fraction=_kv_fraction(row),
                            prefill_buckets=_buckets(notes, "CE"), decode_buckets=_buckets(notes, "TG"),
                            **_stack(row))
    if speculation is not None:
        return serving_replica(model, hardware, deployment, speculation=speculation,
                               draft_model=load_model(speculation.draft or ""))
    return ReplicaModel(model, hardware, deployment)


def _stack(row: dict[str, str]) -> dict[str, str]:
    """The row's engine stack from its ``serving_engine`` (inference/stacks.py), with the frontend
    its ``benchmark_tool`` implies where it differs from the stack's: TensorRT-LLM rows run
    ``trtllm`` (``trtllm-bench``: engine; the Triton rows were measured by an online client through
    Triton's server: ``server``), the Neuron rows ``neuron``. The row's own fields (KV fraction,
    batch limit, buckets) are given, so the stacks leave every prediction as it was."""
    engine = row["serving_engine"]
    if engine.startswith("TensorRT-LLM"):
        return {"stack": "trtllm", **({"frontend": "server"} if "Triton" in engine else {})}
    if "Neuron" in engine:
        return {"stack": "neuron"}
    return {}


def attention_dp_layout(row: dict[str, str], model: Model, stage_chips: int) -> dict[str, int]:
    """The attention-DP layout of a row whose source says its MoE runs used TensorRT-LLM's
    ``enable_attention_dp`` (the perf-overview pages: "MoE runs use enable_attention_dp"):
    attention data-parallel over the ``stage_chips`` chips of a pipeline stage with attention
    TP 1, the experts over the row's ``expert_parallel`` (else all of them). Empty for a dense
    model (the note is about the page's MoE runs) or a row that does not say so."""
    text = f"{row['notes']} {row['parallelism_as_published']}"
    if model.moe is None or "enable_attention_dp" not in text or re.search(r"enable_attention_dp\W*(false|off)", text):
        return {}
    return {"attention_dp": stage_chips, "tp": 1, "ep": int(row["expert_parallel"] or stage_chips)}


def _layout_assumptions(row: dict[str, str]) -> tuple[str, ...]:
    """What a row's attention-DP layout assumes, when it has one."""
    model = load_model(_MODELS[row["model"].lower()])
    chips = int(row["chips"] or row["tensor_parallel"] or 1)
    layout = attention_dp_layout(row, model, chips // int(row["pipeline_parallel"] or 1))
    if not layout:
        return ()
    return (f"attention DP over {layout['attention_dp']} ranks (TP1), experts over EP{layout['ep']}: the "
            "source says its MoE runs use enable_attention_dp",)


def _kv_fraction(row: dict[str, str]) -> float:
    """KV-cache share of the memory left after weights and runtime: what the row's notes say the
    run set (``kv_cache_free_gpu_mem_fraction 0.95``), else the engine default."""
    if row["hardware"] == "Trainium2":
        return 0.9
    return 0.95 if "kv_cache_free_gpu_mem_fraction 0.95" in row["notes"] else TRTLLM_DEFAULT_KV_FRACTION


def _requests(row: dict[str, str], rows: list[dict[str, str]]) -> int:
    """The row's benchmark size (``num_requests``); where a row does not print it, the size the
    same methodology used for the nearest sequence length (its perf-overview page sets
    ``$num_requests`` by input+output length)."""
    if row["num_requests"]:
        return int(row["num_requests"])
    length = int(row["input_tokens"]) + int(row["output_tokens"])
    sized = [r for r in rows if r["scenario"] == row["scenario"] and r["num_requests"]]
    nearest = min(sized, key=lambda r: (abs(int(r["input_tokens"]) + int(r["output_tokens"]) - length),
                                        -int(r["num_requests"])))
    return int(nearest["num_requests"])


def _family(row: dict[str, str]) -> str:
    return hardware_for(load_system(_SYSTEMS[row["hardware"]])).chip.family


def _case(table: str, row: dict[str, str], label: str, metric: str, published: float,
          predict: Callable[[ReplicaModel], float], assumptions: tuple[str, ...]) -> Case:
    try:
        family = _family(row)
        _replica(row, load_efficiency(family))
        assumptions = assumptions + _layout_assumptions(row)
    except (SpecError, ValidationError, KeyError, ValueError) as error:
        return Case(table, label, metric, published, skip=str(error).splitlines()[0], source=row["source"])

    def run(efficiency: Efficiency, row: dict[str, str] = row) -> float:
        return predict(_replica(row, efficiency))

    return Case(table, label, metric, published, assumptions=assumptions, source=row["source"], family=family,
                predict=run)


def _not_modelled(row: dict[str, str], metric: str) -> str | None:
    """Why a latency case is outside the model, or None. A superseded publication is replaced by
    the newer row of the same configuration, as in the training tables (newest result per
    configuration). Under speculative decoding the TTFT is a prefill of the target and the draft
    and is modelled; the TPOT is the iteration time over the expected tokens per iteration, which
    needs the per-token acceptance: the AWS tutorials publish none for Llama-3.2-1B drafting
    Llama-3.3-70B / 3.1-405B on LLMPerf's prompts, nor does another publication for that pair
    and workload that we know of, and it is not fitted to the row."""
    if "SUPERSEDED" in row["notes"]:
        return "superseded by a newer publication of the same configuration (newest row kept)"
    if _weights(row["precision_weights"]) == "fp8" and "bfloat16 compute" in row["notes"]:
        # Neuron's per-channel FP8 checkpoint: fp8 MLP weights, bf16 torch dtype, the modules of
        # modules_to_not_convert.json left bf16. Run at fp8 throughout this row's TTFT comes out
        # at -30 %, at bf16 throughout +11 %: neither is the deployment, so neither is reported.
        return ("FP8 weights with bfloat16 compute and unquantized modules: a mixed weight/compute "
                "format the step model does not express (it runs every block GEMM at the weights' format)")
    speculative = row["speculative_decoding"].strip().lower()
    if speculative and speculative != "no" and metric == "tpot_s":
        return (f"speculative decoding ({row['speculative_decoding']}): no published acceptance rate for "
                "this draft/target pair and workload (not fitted to the row)")
    return None


def engine_release(name: str) -> tuple[int, ...]:
    """Order of a TensorRT-LLM release as the table spells it ("0.14.0", "v0.20 (PyTorch
    backend)", "v1.0-era docs (... since v0.19 ...)"): its first version number; a docs revision
    "after vX" comes just after vX."""
    found = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", name)
    if found is None:
        return ()
    numbers = tuple(int(part) for part in found.groups() if part is not None)
    return (*numbers, 1) if f"after v{found.group(0)}" in name else numbers


def _offline_run(row: dict[str, str]) -> tuple[str, ...]:
    """A throughput row's configuration: catalog model (Llama 3.1 and 3.3 70B are one
    architecture), hardware, TP, PP, formats and request shape."""
    return (_MODELS[row["model"].lower()], row["hardware"], row["tensor_parallel"], row["pipeline_parallel"] or "1",
            row["precision_weights"].upper(), row["precision_kv"].upper(), row["input_tokens"], row["output_tokens"])


def inference_throughput() -> list[Case]:
    """Offline rows, predicted by the analytic steady state of a finite run. As for the NeMo
    training tables (``cases.stack_epochs``), rows from before the newest release in which an
    identical configuration ran at least 1.2x faster on the same chip family measure an older
    software stack and are listed as not modelled."""
    cases = []
    rows = _rows()
    offline_rows = [row for row in rows if row["scenario"] == "offline"]
    epochs = stack_epochs(offline_rows, run=_offline_run, release=lambda row: row["engine_version"],
                          version=engine_release, rate=lambda row: float(row["throughput_output_tokens_per_s"]),
                          family=_family)
    for row in offline_rows:
        isl, osl, requests = int(row["input_tokens"]), int(row["output_tokens"]), _requests(row, rows)
        label = (f"{row['model']} TP{row['tensor_parallel']} {row['precision_weights']} {isl}/{osl} "
                 f"({row['engine_version'][:22]})")
        published = float(row["throughput_output_tokens_per_s"])
        epoch = epochs.get(_family(row))
        if epoch is not None and engine_release(row["engine_version"]) < engine_release(epoch[0]):
            release, example, speedup = epoch
            cases.append(Case("inference_throughput", label, "output_tokens_per_s", published, source=row["source"],
                              skip=f"older software stack: TensorRT-LLM {release} ran an identical {example} "
                                   f"configuration on this chip family {speedup - 1:.0%} faster"))
            continue

        def predict(replica: ReplicaModel, isl: int = isl, osl: int = osl, requests: int = requests) -> float:
            return float(replica.offline_throughput(isl, osl, requests)["output_tokens_per_s"])

        cases.append(_case("inference_throughput", row, label, "output_tokens_per_s", published, predict,
                           ("fp8 KV cache with fp8 weights when the row does not say", "engine batch limit 2048",
                            f"{_kv_fraction(row):.0%} of the memory left after weights and runtime for KV "
                            "(kv_cache_free_gpu_mem_fraction: 0.95 where the row notes say so, else the "
                            "TensorRT-LLM default 0.90)",
                            f"a finite run of {requests} requests queued at t = 0, throughput over its wall time")))
    return cases


def inference_latency() -> list[Case]:
    cases = []
    for row in _rows():
        if row["scenario"] != "single_request":
            continue
        isl, osl = int(row["input_tokens"]), int(row["output_tokens"] or 1)
        for metric, column in (("ttft_s", "ttft_ms"), ("tpot_s", "tpot_ms")):
            value = row[column] or row.get(f"{column.removesuffix('_ms')}_p50_ms", "")
            if not value:
                continue
            label = f"{row['row_id']} {row['model']} Trn2 {row['precision_weights']} {isl}/{osl} {metric[:4].upper()}"
            reason = _not_modelled(row, metric)
            if reason:
                cases.append(Case("inference_latency", label, metric, float(value) / 1000.0, skip=reason,
                                  source=row["source"]))
                continue

            def predict(replica: ReplicaModel, isl: int = isl, osl: int = osl, metric: str = metric) -> float:
                if metric == "ttft_s":
                    return float(replica.single_request_ttft(isl))
                return float(replica.decode_time(1, isl + osl // 2))

            assumptions: tuple[str, ...] = (
                "TTFT = one prefill of the prompt", "TPOT = one decode step at mid-generation",
                "TP 64 logical NeuronCores = 16 chips",
                "the row's compiled buckets: the prompt runs at its context-encoding bucket, "
                "decode attention over its token-generation bucket")
            if _speculation(row) is not None:
                assumptions = (
                    "TTFT = one prefill of the prompt by the target and by the draft (fused speculation "
                    "encodes the context with both); no acceptance rate enters it",
                    "the draft (the row's Llama-3.2-1B) on the same 16 chips, TP 16, at the target's "
                    "weight format (the draft's format is not published; its prefill is ~1 % of the TTFT)",
                    "TP 64 logical NeuronCores = 16 chips",
                    "the compiled buckets of the same tutorial's run without speculation (its notes: 'same "
                    "as baseline plus' the draft; the 405B tutorial's Scenario 2 compile command repeats "
                    "them), for target and draft")
            cases.append(_case("inference_latency", row, label, metric, float(value) / 1000.0, predict,
                               assumptions))
    return cases


#: Simulated runs shared by a row's TTFT and TPOT cases: (row id, efficiency JSON) -> means.
_REPLAYS: dict[tuple[str, str], tuple[float, float]] = {}


def _replay(row: dict[str, str], replica: ReplicaModel) -> tuple[float, float]:
    """Mean TTFT and mean inter-token latency of the row's benchmark replayed through the
    request-level simulator: ``num_requests`` fixed-length requests, Poisson arrivals at the
    row's rate (``inf``: all queued at t = 0, as the benchmark's max-load point)."""
    key = (row["row_id"], replica.hardware.efficiency.model_dump_json())
    if key not in _REPLAYS:
        isl, osl, n = int(row["input_tokens"]), int(row["output_tokens"]), int(row["num_requests"] or 500)
        rate = float(row["request_rate_qps"])
        requests = (offline(n, isl, osl) if math.isinf(rate) else
                    sample(ServingLoad(rate_per_s=rate, requests=n, input_tokens=isl, output_tokens=osl)))
        result = simulate(replica, requests)
        _REPLAYS[key] = (float(np.mean(result.ttft_s)), float(np.nanmean(result.tpot_s)))
    return _REPLAYS[key]


def inference_server() -> list[Case]:
    """Online-serving rows: a request rate, replayed with the simulator."""
    cases = []
    for row in _rows():
        if row["scenario"] != "server":
            continue
        base = f"{row['row_id']} {row['model']} {row['hardware']}"
        if not (row["input_tokens"] and row["request_rate_qps"]):
            for metric, column in (("ttft_s", "ttft_ms"), ("tpot_s", "tpot_ms")):
                if row[column]:
                    cases.append(Case("inference_server", f"{base} {metric[:4].upper()}", metric,
                                      float(row[column]) / 1000.0, source=row["source"],
                                      skip="request lengths and request rate not published (prefix-caching study)"))
            continue
        rate = row["request_rate_qps"]
        for metric, column, index in (("ttft_s", "ttft_ms", 0), ("tpot_s", "tpot_ms", 1)):
            label = (f"{base} TP{row['tensor_parallel']} {row['precision_weights']} "
                     f"{row['input_tokens']}/{row['output_tokens']} @ {rate} req/s {metric[:4].upper()}")

            def predict(replica: ReplicaModel, row: dict[str, str] = row, index: int = index) -> float:
                return _replay(row, replica)[index]

            cases.append(_case("inference_server", row, label, metric, float(row[column]) / 1000.0, predict,
                               ("Poisson arrivals at the published rate; inf = all requests at t = 0",
                                "mean TTFT; TPOT = mean inter-token latency", "engine batch limit 2048")))
    return cases


# ---------------------------------------------------------------------------------------------- MLPerf Inference

#: Mean prompt length (Llama-2 tokens, ``tok_input_length``) of the llama2-70b benchmark's 24,576
#: OpenOrca (GPT-4 part) samples, ``open_orca_gpt4_tokenized_llama.sampled_24576.pkl``:
#: 5,463,976 tokens over 24,576 rows = 222.33 (min 48, max 1,021). Source: the length contract
#: of github.com/FlashLab-MBZUAI/HBFSim @ 96cf1b37
#: validation/calibration/h100-llama2-70b-calibration-protocol.json
#: (``workload_evidence.lengths_csv.input_tokens``: its extractor sums the column of the
#: MLCommons file, pinned by size and MD5 c247a315..., SHA-256 ec34d70f...). Not an MLCommons
#: publication: MLCommons (mlcommons/inference language/llama2-70b/README.md) publishes the
#: filter (prompts and answers of at most 1,024 tokens) and the mean *output* of the fp16
#: reference ("Tokens per sample: 294.45"), not the mean prompt (docs/validation.md).
MLPERF_LLAMA2_INPUT_TOKENS = round(5_463_976 / 24_576)  # 222

#: Mean prompt length (Mixtral tokens, ``tok_input_len``) of the mixtral-8x7b benchmark's 15,000
#: samples (5,000 each from OpenOrca, GSM8K and MBXP; mlcommons/inference
#: language/mixtral-8x7b/README.md), ``09292024_mixtral_15k_mintoken2_v1.pkl``: 6,410,905 tokens
#: over 15,000 rows = 427.39 (min 35, max 1,948). Source: the per-sample length summary of
#: github.com/openshift-psap/performance-dashboard @ 67033bae mlperf-data/summaries/mixtral-8x7b.csv
#: (its mlperf-data/original/generate_dataset_summaries.py copies the MLCommons file's
#: ``tok_input_len`` column). The same repository's llama2-70b-99.csv sums to
#: 5,463,976 over 24,576 rows, HBFSim's figure above. Not an MLCommons publication: MLCommons
#: publishes the dataset, not its mean prompt.
MLPERF_MIXTRAL_INPUT_TOKENS = round(6_410_905 / 15_000)  # 427

#: Mean prompt length (DeepSeek-R1 tokens, ``tok_input_len``) of the deepseek-r1 benchmark's
#: 4,388 samples, ``mlperf_deepseek_r1_dataset_4388_fp8_eval.pkl`` (the performance sample count
#: of mlcommons/inference loadgen/mlperf.conf): 3,527,036 tokens over 4,388 rows = 803.79 (min 52,
#: max 3,140: the ``max_input_len`` of NVIDIA's v5.1 engines). Source: the same
#: performance-dashboard @ 67033bae, mlperf-data/summaries/deepseek-r1.csv (its generator copies
#: ``tok_input_len``). Its reference outputs (``tok_ref_output_len``) average 4,043.4 tokens; the
#: MLCommons checker's reference is 3,886.2274 tokens per sample (tools/submission/
#: submission_checker/constants.py, ``TOKENS_PER_SAMPLE``, bounded at x0.9 and x1.1). Each row
#: runs at its own mean output (:func:`_mlperf_output_tokens`).
MLPERF_DEEPSEEK_R1_INPUT_TOKENS = round(3_527_036 / 4_388)  # 804

#: Mean prompt length (Llama 3.1 tokens, ``tok_input_len``) of the llama3.1-405b benchmark's
#: 8,313 samples, ``mlperf_llama3.1_405b_dataset_8313_processed_fp16_eval.pkl`` (the performance
#: sample count of loadgen/mlperf.conf): 78,380,323 tokens over 8,313 rows = 9,428.64 (min 476, max
#: 19,988: under the ``max_input_len`` 20000 of NVIDIA's v5.1 engines). Source: performance-dashboard
#: @ 67033bae mlperf-data/summaries/llama3-1-405b.csv (its generator copies ``tok_input_len``). Its
#: reference outputs average 684.68 tokens, the MLCommons checker's ``TOKENS_PER_SAMPLE`` (x1.1
#: upper bound).
MLPERF_LLAMA31_405B_INPUT_TOKENS = round(78_380_323 / 8_313)  # 9429

#: Each benchmark's mean prompt (keyed by the table's ``model`` column) and how a case's
#: assumptions cite it.
MLPERF_INPUT_TOKENS: dict[str, int] = {"llama2-70b": MLPERF_LLAMA2_INPUT_TOKENS,
                                       "mixtral-8x7b": MLPERF_MIXTRAL_INPUT_TOKENS,
                                       "deepseek-r1": MLPERF_DEEPSEEK_R1_INPUT_TOKENS,
                                       "llama3.1-405b": MLPERF_LLAMA31_405B_INPUT_TOKENS}
_MLPERF_INPUT_BASIS: dict[str, str] = {
    "llama2-70b": "the dataset's tok_input_length: 5,463,976 / 24,576, from a third-party length extraction, "
                  "HBFSim; MLCommons publishes none",
    "mixtral-8x7b": "the dataset's tok_input_len: 6,410,905 / 15,000, from a third-party length summary, "
                    "openshift-psap/performance-dashboard; MLCommons publishes none",
    "deepseek-r1": "the dataset's tok_input_len: 3,527,036 / 4,388, from a third-party length summary, "
                   "openshift-psap/performance-dashboard; MLCommons publishes none",
    "llama3.1-405b": "the dataset's tok_input_len: 78,380,323 / 8,313, from a third-party length summary, "
                     "openshift-psap/performance-dashboard; MLCommons publishes none",
}

#: Requests simulated per replica for a Server/Interactive row's rate search: several times the
#: replica's batch limit, so that the queue reaches its steady state (a run no longer than the
#: batch admits every request at once and never queues), within [3,000, 12,288] (each bisection
#: step is one simulation of about 0.05 s). 1,500 requests overshot the 8x B200 Server row by
#: +38 %; 6,000 and 12,000 agree within 7 %.
def mlperf_server_requests(max_batch: int) -> int:
    return min(12_288, max(3_000, 6 * max_batch))


def _mlperf_rows() -> list[dict[str, str]]:
    text = resources.files("clusterplan.validation").joinpath("tables/mlperf_inference.csv").read_text("utf-8")
    return list(csv.DictReader(text.splitlines()))


def _mlperf_layout(row: dict[str, str]) -> dict[str, int]:
    """The replica layout of a row: ``tensor_parallel`` is the submission's tensor parallelism,
    the chips of one pipeline stage. Three optional columns (empty: 1, the layout of the rows
    before them): ``pipeline_parallel``, the config's ``pipeline_parallelism`` (a replica is
    ``tensor_parallel x pipeline_parallel`` chips); ``attention_dp``, the ranks over which the
    config runs attention data-parallel (TensorRT-LLM's ``enable_attention_dp``: each of the
    ``tensor_parallel`` ranks holds whole attention for its own sequences, attention TP =
    ``tensor_parallel / attention_dp``); ``expert_parallel``, the config's
    ``moe_expert_parallelism``. A ValueError for a layout that does not divide."""
    tp = int(row["tensor_parallel"])
    pp = int(row.get("pipeline_parallel") or 1)
    adp = int(row.get("attention_dp") or 1)
    ep = int(row.get("expert_parallel") or 1)
    if min(pp, adp, ep) < 1 or tp % adp != 0:
        raise ValueError(f"attention_dp {adp} must divide tensor_parallel {tp} (pipeline_parallel {pp}, "
                         f"expert_parallel {ep}: each at least 1)")
    return {"attention_dp": adp, "tp": tp // adp, "pp": pp, "ep": ep}


def _mlperf_replica_chips(row: dict[str, str]) -> int:
    """Chips of one replica: ``tensor_parallel x pipeline_parallel``."""
    return int(row["tensor_parallel"]) * int(row.get("pipeline_parallel") or 1)


def _mlperf_layout_label(row: dict[str, str]) -> str:
    """``TP8`` as before; a row with PP, attention DP or EP adds them (``TP2 PP2``, ``TP8 ADP8 EP8``)."""
    extra = [f"{name}{row.get(column)}" for name, column in (("PP", "pipeline_parallel"), ("ADP", "attention_dp"),
                                                             ("EP", "expert_parallel"))
             if (row.get(column) or "1") != "1"]
    return " ".join([f"TP{row['tensor_parallel'] or '?'}", *extra])


def _mlperf_replica(row: dict[str, str], efficiency: Efficiency) -> ReplicaModel:
    """One serving replica of the row's submission: its TP (and PP, attention DP, EP: see
    :func:`_mlperf_layout`), formats, batch limit and KV share (the engine's free-memory fraction)
    from the submission's config. A KV cache dtype the config leaves unset is fp8 with fp8
    weights (TensorRT-LLM's fp8 recipe) and bf16 otherwise. ``max_batch_size_per_replica`` is the
    engine's limit (:class:`~clusterplan.inference.step.Deployment` ``max_batch``): with attention
    DP, per attention-DP rank (each rank schedules its own batch); with PP, per micro-batch in
    flight (each an engine of ``ReplicaModel``)."""
    model = load_model(row["model"])
    system = load_system(row["hardware"])
    hardware = Hardware(system=system, chip=hardware_for(system).chip, efficiency=efficiency)
    weights = row["precision_weights"].lower()
    kv = row["precision_kv"].lower() or ("fp8" if weights == "fp8" else "bf16")
    # TensorRT-LLM's context FMHA at FlashAttention-3's rate where that was measured on the family,
    # as `--stack trtllm` does (inference/stacks.py TRTLLM_ATTENTION); other engines at the reference
    trtllm = row["engine"].startswith("TensorRT-LLM") and hardware.attention_kernel_measured(TRTLLM_ATTENTION)
    deployment = Deployment(**_mlperf_layout(row), weights=weights, kv_cache=kv,
                            max_batch=int(row["max_batch_size_per_replica"]),
                            kv_memory_fraction=float(row["kv_memory_fraction"]), frontend="engine",
                            attention_kernel=TRTLLM_ATTENTION if trtllm else "auto")
    return ReplicaModel(model, hardware, deployment)


def _mlperf_input_tokens(row: dict[str, str]) -> int:
    """The benchmark's mean prompt (``MLPERF_INPUT_TOKENS``); a KeyError for a benchmark without a
    sourced mean, which the table reports as a skip."""
    model = row["model"]
    if model not in MLPERF_INPUT_TOKENS:
        raise KeyError(f"no sourced mean prompt length for {model}")
    return MLPERF_INPUT_TOKENS[model]


def _mlperf_label(row: dict[str, str]) -> str:
    """The case label. The llama2-70b rows keep the labels they had before other benchmarks joined
    (crossval.yaml's records name them); other benchmarks name their model after the id."""
    model = "" if row["model"] == "llama2-70b" else f" {row['model']}"
    return (f"{row['row_id']}{model} {row['round']} {row['submitter']} {row['accelerators']}x{row['accelerator']} "
            f"{row['scenario']} {_mlperf_layout_label(row)} {row['precision_weights']}")


def _mlperf_output_tokens(row: dict[str, str]) -> int:
    """The run's mean generated length: its published tokens/s over its samples/s (both from the
    same mlperf_log_summary.txt; outputs end at EOS, so each engine's mean differs a little from
    the reference's: 294.45 for llama2-70b, 145.9 for mixtral-8x7b, 3,886.2 for deepseek-r1,
    684.68 for llama3.1-405b)."""
    return round(float(row["result_tokens_per_s"]) / float(row["result_samples_per_s"]))


#: The engine settings of a Server/Interactive row (columns ``max_num_tokens``, ``scheduler``,
#: ``admission``), read from each submission's code and config:
#:
#: * NVIDIA v4.1 (TensorRT-LLM 0.10): the engines are built with ``max_num_tokens`` 16384
#:   (``closed/NVIDIA/code/llama2-70b/tensorrt/builder.py``; the llama2-70b configs do not set
#:   it), contexts are not chunked (``code/harness/harness_llm/llm_core.cc``: a
#:   ``SchedulerConfig`` with the capacity policy only; prompts of at most 1,024 tokens fit the
#:   budget whole), and the harness's capacity policy is ``max_util`` (``main_llm.cc``,
#:   ``llm_utils.hpp``: ``kMAX_UTILIZATION``), which admits beyond the KV a whole output needs
#:   and pauses requests when it runs out: ``optimistic``. The mixtral-8x7b engines run the same
#:   harness; their budget is 16384 (``configs/mixtral-8x7b/__init__.py``) or the 8192 a config
#:   sets (H100 Offline, H200 Server), and their prompts (at most 2,048 tokens, ``--max_input_len``
#:   in ``code/mixtral-8x7b/tensorrt/builder.py``) fit it whole.
#: * NVIDIA v5.1: ``max_num_tokens`` 3584 (Offline, Server) and 768 (Interactive),
#:   ``enable_chunked_context``, ``batch_scheduler_policy`` ``max_util``
#:   (``closed/NVIDIA/configs/<system>/<scenario>/llama2-70b.py``).
#: * AMD v5.1 (vLLM 0.9, V0 engine): ``enable_chunked_prefill: False`` and
#:   ``max_num_batched_tokens`` 40960 (``closed/AMD/code/llama2-70b-99/harness_llm/models/
#:   llama2-70b/*_mi300x.yaml``): vLLM V0's prefill-first ``continuous`` scheduling with prefill
#:   steps of up to 40,960 tokens, optimistic admission with preemption. Not modelled: its
#:   multi-step scheduling (``num_scheduler_steps`` 8-11) and, for Server, the MLPerf decode-batch
#:   targets of its ``VLLM_LLAMA2_MLPERF_*`` settings. Its mixtral-8x7b yamls
#:   (``closed/AMD/code/mixtral-8x7b/harness_llm/models/mixtral-8x7b/*.yaml``) are alike:
#:   ``enable_chunked_prefill: False``, ``max_num_batched_tokens`` 51200 (Offline) and 32000
#:   (Server), ``num_scheduler_steps`` 8-13 (not modelled either).
#: * NVIDIA v5.1 deepseek-r1 (TensorRT-LLM PyTorch backend behind the harness's endpoint):
#:   ``max_num_tokens`` 4608 (Offline; 6656 on GB300) and 3456 (Server),
#:   ``enable_chunked_context`` False with prompts of at most ``max_input_len`` 3140 tokens, which
#:   fit the budget whole (``chunked`` with that budget, as the v4.1 rows), ``max_util``
#:   (``closed/NVIDIA/configs/<system>/<scenario>/deepseek-r1.py``); the budget is per
#:   attention-DP rank, each rank an engine of the simulated fleet.
#: * NVIDIA v5.1 llama3.1-405b (TensorRT-LLM engines): runtime ``max_num_tokens`` 1024-2048,
#:   ``enable_chunked_context`` True, ``max_util``
#:   (``closed/NVIDIA/configs/<system>/<scenario>/llama3_1-405b.py``).
#:
#: Offline rows use the analytic steady state (``ReplicaModel.offline_throughput``), which these
#: settings do not enter.
def _mlperf_engine(row: dict[str, str]) -> dict[str, Any]:
    scheduler, tokens = row["scheduler"], int(row["max_num_tokens"])
    if scheduler == "chunked":
        return {"scheduler": "chunked", "chunk_tokens": tokens, "admission": row["admission"]}
    return {"scheduler": scheduler, "max_prefill_tokens": tokens, "admission": row["admission"]}


def _mlperf_skip(row: dict[str, str]) -> str | None:
    notes = row["notes"]
    if notes.startswith("SKIP:"):
        return notes.removeprefix("SKIP:").split("|")[0].strip()
    if row["status"] != "available":
        return f"{row['status']} system, not available"
    return None


#: The published runs whose replicas serve DeepSeek-R1/V3 attention data-parallel with wide
#: expert parallelism on TensorRT-LLM (MLPerf Inference v5.1 deepseek-r1; the TensorRT-LLM
#: DeepSeek-R1 performance guide's max-throughput runs and its ADP-balance experiment,
#: ``tables/wide_ep_published.csv``): a validation-only table of their own. The step model now
#: charges the NVFP4 checkpoint's bf16 MLA projections and router, the measured MLA decode rate
#: and the routing skew of real text (round 20), and still predicts these runs 1.4-4.0x too fast:
#: their measured iterations (162 ms at 896 sequences a rank on B200, from the guide's request
#: latency) are about twice the sum of the modelled kernels, and the engines' rank
#: synchronisation and prefill balancing are not modelled (docs/serving.md). Fitted, they would
#: move Blackwell's three serving parameters, which describe none of it, and with them every
#: Blackwell serving answer; measured here, they say how far off such answers are.
MLPERF_WIDE_EP_TABLE = WIDE_EP_TABLE  # named where the bands read it (validation/bands.py)

#: The MLPerf benchmarks whose Server and Interactive rows are validated, not fitted, and why: the
#: rate a latency-bound run sustains is set by its p99 TTFT, and where the prompts spread over a
#: decade the p99 is the longest prompts' prefill, which requests fixed at the mean length do not
#: have. Their Offline rows (throughput, linear in the tokens) stay in the fit. A second reason:
#: the simulated rate searches of their long prompts doubled the serving fit's cost
#: (`clusterplan calibrate` on two cores from 38 to ~100 minutes).
MLPERF_LATENCY_UNFITTED = {
    "llama3.1-405b": "prompts of 476 to 19,988 tokens (mean 9,429): the 6 s / 4.5 s p99 TTFT limits bind on the "
                     "longest prompts' prefills, which requests fixed at the mean length do not have",
}
MLPERF_LONG_PROMPT_TABLE = "mlperf_inference_long_prompts"


def _mlperf_table(row: dict[str, str]) -> str:
    """The table a row of the MLPerf Inference CSV belongs to: attention-DP rows
    (:data:`MLPERF_WIDE_EP_TABLE`), the latency-bound rows of :data:`MLPERF_LATENCY_UNFITTED`
    (:data:`MLPERF_LONG_PROMPT_TABLE`), both validation only; every other row is fitted."""
    if int(row.get("attention_dp") or 1) > 1:
        return MLPERF_WIDE_EP_TABLE
    if row["scenario"] != "offline" and row["model"] in MLPERF_LATENCY_UNFITTED:
        return MLPERF_LONG_PROMPT_TABLE
    return "mlperf_inference"


def mlperf_inference_long_prompts() -> list[Case]:
    """The latency-bound MLPerf Inference rows of :data:`MLPERF_LATENCY_UNFITTED` (validation only),
    predicted as :func:`mlperf_inference` predicts its rows, with the reason in their assumptions."""
    return _mlperf_cases(MLPERF_LONG_PROMPT_TABLE)


def inference_wide_ep() -> list[Case]:
    """The published runs served with attention DP and wide EP (:data:`MLPERF_WIDE_EP_TABLE`):
    MLPerf's, predicted as :func:`mlperf_inference` predicts its rows, then the TensorRT-LLM
    runs of ``tables/wide_ep_published.csv`` (:func:`wide_ep_published`); validation only."""
    return _mlperf_cases(MLPERF_WIDE_EP_TABLE) + wide_ep_published()


@dataclass(frozen=True)
class _NotBuilt:
    reason: str


def _built_family(system: str, build: Callable[[Efficiency], ReplicaModel]) -> str | _NotBuilt:
    """The chip family of catalog ``system`` once a row's replica builds with its efficiencies;
    the first line of what refused it (a bad layout, a model that does not fit) otherwise."""
    try:
        family = hardware_for(load_system(system)).chip.family
        build(load_efficiency(family))
    except (SpecError, ValidationError, KeyError, ValueError) as error:
        return _NotBuilt(str(error).splitlines()[0])
    return family


def _wide_ep_rows() -> list[dict[str, str]]:
    text = resources.files("clusterplan.validation").joinpath("tables/wide_ep_published.csv").read_text("utf-8")
    return list(csv.DictReader(text.splitlines()))


def _wide_ep_replica(row: dict[str, str], efficiency: Efficiency) -> ReplicaModel:
    """One replica of a wide-EP row: ``attention_dp`` ranks of ``tp`` chips, experts over
    ``ep``, the row's formats, per-rank batch limit and KV share, measured at the engine; prefill
    attention at TensorRT-LLM's context FMHA rate where the family measured it (as MLPerf's)."""
    model = load_model(_MODELS[row["model"].lower()])
    system = load_system(row["system"])
    hardware = Hardware(system=system, chip=hardware_for(system).chip, efficiency=efficiency)
    trtllm = hardware.attention_kernel_measured(TRTLLM_ATTENTION)
    deployment = Deployment(tp=int(row["tp"]), attention_dp=int(row["attention_dp"]), ep=int(row["ep"]),
                            weights=row["weights"], kv_cache=row["kv_cache"], max_batch=int(row["max_batch_per_rank"]),
                            kv_memory_fraction=float(row["kv_memory_fraction"]), frontend="engine",
                            attention_kernel=TRTLLM_ATTENTION if trtllm else "auto")
    return ReplicaModel(model, hardware, deployment)


def wide_ep_published() -> list[Case]:
    """TensorRT-LLM's published attention-DP, wide-EP throughput runs (``trtllm-bench``-style
    finite offline runs, all requests queued at the start under a concurrency of the ranks'
    batch limits), predicted by the analytic steady state of that finite run
    (:meth:`~clusterplan.inference.step.ReplicaModel.offline_throughput`) at the row's mean
    lengths."""
    cases = []
    for row in _wide_ep_rows():
        isl, osl, requests = int(row["input_tokens"]), int(row["output_tokens"]), int(row["num_requests"])
        label = (f"{row['row_id']} {row['model']} on {row['chips']} of {row['system']}, ADP{row['attention_dp']} "
                 f"EP{row['ep']} {row['weights']} (KV {row['kv_cache']}), {row['max_batch_per_rank']} a rank, "
                 f"{isl}/{osl}")
        published = float(row["output_tokens_per_s"])
        family = _built_family(row["system"], partial(_wide_ep_replica, row))
        if not isinstance(family, str):
            cases.append(Case(MLPERF_WIDE_EP_TABLE, label, "output_tokens_per_s", published, skip=family.reason,
                              source=row["source"]))
            continue

        def predict(efficiency: Efficiency, row: dict[str, str] = row, isl: int = isl, osl: int = osl,
                    requests: int = requests) -> float:
            replica = _wide_ep_replica(row, efficiency)
            return float(replica.offline_throughput(isl, osl, requests)["output_tokens_per_s"])

        lengths = ("lengths fixed (synthetic, stdev 0)" if row["lengths"] == "fixed"
                   else f"lengths fixed at the means of a {row['lengths']} dataset")
        assumptions = (f"{row['attention_dp']} attention-DP ranks of TP{row['tp']}, experts over EP{row['ep']}, "
                       f"at most {row['max_batch_per_rank']} sequences a rank", lengths,
                       f"a finite run of {requests:,} requests queued at t = 0, throughput over its wall time",
                       f"{float(row['kv_memory_fraction']):.0%} of the memory left after weights and runtime for KV",
                       "ranks balanced in every step (no rank synchronisation or prefill imbalance)")
        cases.append(Case(MLPERF_WIDE_EP_TABLE, label, "output_tokens_per_s", published, assumptions=assumptions,
                          source=row["source"], family=family, predict=predict))
    return cases


def mlperf_inference() -> list[Case]:
    """MLPerf Inference llama2-70b, mixtral-8x7b and llama3.1-405b results (closed division,
    datacenter), whole-system tokens/s, each at its benchmark's mean prompt
    (``MLPERF_INPUT_TOKENS``); deepseek-r1's attention-DP rows are :func:`inference_wide_ep`.

    * Offline: replicas (accelerators / (TP x PP)) x the replica's saturated output tokens/s at the
      benchmark's mean lengths (``ReplicaModel.offline_throughput``, steady state: a run of
      thousands to tens of thousands of samples over at least 10 minutes). A replica with
      attention DP (``attention_dp``) or PP (``pipeline_parallel``) is that many engines, each
      with its own batch.
    * Server / Interactive: replicas x the highest Poisson rate one replica sustains within the
      scenario's p99 TTFT / TPOT limits (``max_rate_at_slo``, fixed-length requests) x the mean
      output length.
    """
    return _mlperf_cases("mlperf_inference")


def _mlperf_cases(table: str) -> list[Case]:
    """The cases of ``table``'s rows of the MLPerf Inference CSV (:func:`_mlperf_table`)."""
    cases = []
    for row in _mlperf_rows():
        if _mlperf_table(row) != table:
            continue
        scenario = row["scenario"]
        label = _mlperf_label(row)
        published = float(row["result_tokens_per_s"])
        reason = _mlperf_skip(row)
        if reason:
            cases.append(Case(table, label, "output_tokens_per_s", published, skip=reason,
                              source=row["source"]))
            continue
        osl = _mlperf_output_tokens(row)
        try:
            replicas = int(row["accelerators"]) // _mlperf_replica_chips(row)
            isl = _mlperf_input_tokens(row)
        except (KeyError, ValueError) as error:
            cases.append(Case(table, label, "output_tokens_per_s", published,
                              skip=str(error).splitlines()[0], source=row["source"]))
            continue
        family = _built_family(row["hardware"], partial(_mlperf_replica, row))
        if not isinstance(family, str):
            cases.append(Case(table, label, "output_tokens_per_s", published, skip=family.reason,
                              source=row["source"]))
            continue
        layout = _mlperf_layout(row)
        shape = f"TP{row['tensor_parallel']}" + (f" PP{layout['pp']}" if layout["pp"] > 1 else "")
        if layout["attention_dp"] > 1 or layout["ep"] > 1:
            shape = (f"{layout['attention_dp']} attention-DP ranks of TP{layout['tp']}, experts over EP{layout['ep']} "
                     f"({shape} in the config)")
        common = (f"mean prompt {isl} tokens ({_MLPERF_INPUT_BASIS[row['model']]}), "
                  f"mean output {osl} tokens "
                  "(the run's tokens/s over samples/s)", f"{replicas} replicas of {shape}, "
                  "load spread evenly", "lengths fixed at the means")
        if scenario == "offline":
            def predict(efficiency: Efficiency, row: dict[str, str] = row, isl: int = isl, osl: int = osl,
                        replicas: int = replicas) -> float:
                replica = _mlperf_replica(row, efficiency)
                return replicas * float(replica.offline_throughput(isl, osl)["output_tokens_per_s"])
            assumptions: tuple[str, ...] = (*common, "saturated steady state")
        else:
            ttft, tpot = float(row["ttft_p99_limit_ms"]) / 1000.0, float(row["tpot_p99_limit_ms"]) / 1000.0
            engine = _mlperf_engine(row)

            def predict_server(efficiency: Efficiency, row: dict[str, str] = row, isl: int = isl, osl: int = osl,
                               replicas: int = replicas, ttft: float = ttft, tpot: float = tpot,
                               engine: dict[str, Any] = engine) -> float:
                replica = _mlperf_replica(row, efficiency)
                # the replica's batch limit: every attention-DP rank's (engines = attention_dp)
                load = ServingLoad(rate_per_s=1.0, requests=mlperf_server_requests(replica.max_batch * replica.engines),
                                   input_tokens=isl, output_tokens=osl)
                return replicas * max_rate_at_slo(replica, load, ttft, tpot, **engine) * osl
            simulated = mlperf_server_requests(int(row["max_batch_size_per_replica"]) * layout["attention_dp"]
                                               * layout["pp"])
            budget = (f"{engine['chunk_tokens']:,}-token step budget, decodes included"
                      if engine["scheduler"] == "chunked" else
                      f"prefill steps of up to {engine['max_prefill_tokens']:,} tokens, decodes paused")
            assumptions = (*common, f"Poisson arrivals; p99 TTFT <= {ttft:g} s and p99 TPOT <= {tpot:g} s "
                           f"on {simulated} simulated requests per replica; rate within 5 %",
                           f"{engine['scheduler']} scheduler, {budget}; {engine['admission']} KV admission "
                           "(the submission's config)")
            if table == MLPERF_LONG_PROMPT_TABLE:
                assumptions = (*assumptions, f"validated, not fitted: {MLPERF_LATENCY_UNFITTED[row['model']]}")
            predict = predict_server
        cases.append(Case(table, label, "output_tokens_per_s", published, assumptions=assumptions,
                          source=row["source"], family=family, predict=predict))
    return cases


INFERENCE_TABLES: dict[str, Callable[[], list[Case]]] = {
    "inference_throughput": inference_throughput,
    "inference_latency": inference_latency,
    "inference_server": inference_server,
    "mlperf_inference": mlperf_inference,
    MLPERF_WIDE_EP_TABLE: inference_wide_ep,
    MLPERF_LONG_PROMPT_TABLE: mlperf_inference_long_prompts,
    NEURON_TRN1_TABLE: neuron_trn1_serving,
}


