"""AWS's Trainium1 serving benchmarks: Transformers NeuronX on one trn1.32xlarge (table
``neuron_trn1_serving``).

The Neuron SDK documentation publishes, for Llama 2 7B/13B/70B, Llama 3 8B/70B, Mistral 7B and
CodeLlama 13B on a trn1.32xlarge (16 Trainium1 chips, 32 NeuronCores-v2), the P50 and P99 time to
first token and time per output token of one configuration each: "Real Time" runs at batch 1 and
"Batch" runs at batch 4 or 8, every one at TP 32 NeuronCores, fixed prompt and output lengths, the
model compiled for a maximum sequence length (``tables/neuron_trn1_serving.csv``, copied from
aws-neuron-sdk ``about-neuron/benchmarks/trn1/{latency,throughput}_data_decoder.csv`` @ 1db4d74e,
Neuron 2.18). It is the only public serving table of the Neuron stack across model sizes: the
Trainium2 rows (``inference_latency``) are two models, 70B and 405B.

Each row becomes two cases, predicted as the step model costs them:

- TTFT: the batch's prompts encoded together in one step (Transformers NeuronX runs a static batch:
  :meth:`ReplicaModel.static_batch_ttft`), plus the serving request latency;
- TPOT: one decode step of the batch at mid-generation (prompt + half the output), attention over
  the cached tokens (Transformers NeuronX's token-generation buckets are not published per row, so
  no padding is charged: an assumption each case states).

Chips: TP 32 NeuronCores is 16 chips at two NeuronCores a chip, as the Trainium2 rows count logical
cores. Rows whose weights are stored in int8 and multiplied in bf16 are a mixed format the step
model does not express (as the Trainium2 FP8 rows); Mistral 7B has no catalog model; CodeLlama
13B runs as Llama 2 13B (the same layers; its 16-token larger vocabulary and RoPE base change
neither a step's GEMMs nor its KV).

Validation only (calibrate.VALIDATION_ONLY_TABLES): it measures how the Neuron serving fit, made on
Trainium2's rows, transfers to Trainium1 and across model sizes.
"""

from __future__ import annotations

import csv
from importlib import resources

from pydantic import ValidationError

from clusterplan.catalog import hardware_for, load_efficiency, load_model, load_system
from clusterplan.costs.compute import Efficiency
from clusterplan.errors import SpecError
from clusterplan.inference.step import Deployment, ReplicaModel
from clusterplan.training.step import Hardware
from clusterplan.validation.case import Case

TABLE = "neuron_trn1_serving"
SYSTEM = "trn1"
#: NeuronCores-v2 per Trainium1 chip (trn1.32xlarge: 16 chips, 32 NeuronCores).
CORES_PER_CHIP = 2
MODELS = {"llama-2-7b": "llama2-7b", "llama-2-13b": "llama2-13b", "llama-2-70b": "llama2-70b",
          "llama-3-8b": "llama3-8b", "llama-3-70b": "llama3-70b", "codellama-13b-hf": "llama2-13b"}


def _rows() -> list[dict[str, str]]:
    text = resources.files("clusterplan.validation").joinpath(f"tables/{TABLE}.csv").read_text("utf-8")
    return list(csv.DictReader(text.splitlines()))


def _skip(row: dict[str, str]) -> str | None:
    """Why a row is outside the model, or None."""
    if row["weight_storage"].lower() != "bf16":
        return (f"{row['weight_storage']} weight storage with {row['compute_autocast']} matmuls: a mixed "
                "weight/compute format the step model does not express (it runs every GEMM at the weights' format)")
    if row["model"].lower() not in MODELS:
        return f"{row['model']}: no catalog model"
    return None


def replica(row: dict[str, str], efficiency: Efficiency) -> ReplicaModel:
    """The row's deployment: TP over ``neuron_cores_tp / 2`` chips, bf16 weights and KV, the
    batch as the engine's limit, Neuron's stack."""
    model = load_model(MODELS[row["model"].lower()])
    system = load_system(SYSTEM)
    hardware = Hardware(system=system, chip=hardware_for(system).chip, efficiency=efficiency)
    chips = int(row["neuron_cores_tp"]) // CORES_PER_CHIP
    deployment = Deployment(tp=chips, weights="bf16", kv_cache="bf16", max_batch=int(row["batch"]), stack="neuron")
    return ReplicaModel(model, hardware, deployment)


def _label(row: dict[str, str], metric: str) -> str:
    return (f"{row['row_id']} {row['model']} trn1 TP{row['neuron_cores_tp']} cores batch {row['batch']} "
            f"{row['input_tokens']}/{row['output_tokens']} {metric[:4].upper()}")


def neuron_trn1_serving() -> list[Case]:
    """Two cases (TTFT, TPOT) per published configuration."""
    family = hardware_for(load_system(SYSTEM)).chip.family
    cases = []
    for row in _rows():
        batch, isl, osl = int(row["batch"]), int(row["input_tokens"]), int(row["output_tokens"])
        for metric, column in (("ttft_s", "ttft_p50_ms"), ("tpot_s", "tpot_p50_ms")):
            label, published = _label(row, metric), float(row[column]) / 1000.0
            reason = _skip(row)
            if reason is None:
                try:
                    replica(row, load_efficiency(family))
                except (SpecError, ValidationError) as error:
                    reason = str(error).splitlines()[0]
            if reason is not None:
                cases.append(Case(TABLE, label, metric, published, skip=reason, source=row["source"]))
                continue

            def predict(efficiency: Efficiency, row: dict[str, str] = row, metric: str = metric,
                        batch: int = batch, isl: int = isl, osl: int = osl) -> float:
                served = replica(row, efficiency)
                if metric == "ttft_s":
                    return float(served.static_batch_ttft(batch, isl))
                return float(served.decode_time(batch, batch * (isl + osl // 2)))

            assumptions = (
                f"TP {row['neuron_cores_tp']} NeuronCores = {int(row['neuron_cores_tp']) // CORES_PER_CHIP} chips",
                "TTFT = the batch's prompts encoded in one step (static batch), plus the request latency"
                if batch > 1 else "TTFT = one prefill of the prompt, plus the request latency",
                f"TPOT = one decode step of {batch} sequence(s) at mid-generation",
                "P50 latencies; no token-generation bucket padding (the compiled buckets are not published)",
                *(("CodeLlama 13B as Llama 2 13B (same layers)",) if row["model"].lower().startswith("codellama")
                  else ()),
            )
            cases.append(Case(TABLE, label, metric, published, assumptions=assumptions, source=row["source"],
                              family=family, predict=predict))
    return cases
