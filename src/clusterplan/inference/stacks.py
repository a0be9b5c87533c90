"""Serving engine stacks: each engine's documented defaults as a deployment setting.

``Deployment.stack`` names the engine a replica runs (``None``: today's behaviour exactly, the
defaults of :class:`~clusterplan.inference.step.Deployment`). A stack supplies, for every
Deployment field the user did not set, the engine's own default, and it fixes what the
KV-cache memory fraction *means*; nothing here is fitted. Sources, each at a commit:

``trtllm`` (TensorRT-LLM)
    KV budget: ``KvCacheConfig.free_gpu_memory_fraction`` (``--kv_cache_free_gpu_mem_fraction``),
    the share of the memory *free after the weights are loaded*, default 0.9 (NVIDIA/TensorRT-LLM
    ``docs/source/examples/kvcacheconfig.md`` @ e355779949107dca9ddf6876c82474518882b232: "The
    default value for free_gpu_memory_fraction is 0.9, which means TensorRT-LLM tries to allocate
    90% of free GPU memory (after loading weights) for KV cache"). That is today's formula:
    ``(HBM - weights - runtime reserve) x fraction``. Max batch: 2048, the engine limit the
    validation rows already assume (``validation/inference_cases.py``; not re-verified here
    against a TensorRT-LLM commit). Frontend ``engine``: its standard benchmark, ``trtllm-bench``,
    drives the engine in-process (no API server). Prefill attention: its own context FMHA, rated
    as FlashAttention-3 on a family whose attention libraries were measured
    (:data:`TRTLLM_ATTENTION`); vLLM and SGLang run FlashAttention-3 there too
    (:data:`ENGINE_ATTENTION`).
``vllm``
    KV budget: ``gpu_memory_utilization``, the share of the *whole* device memory the instance may
    use for weights, activations and KV together, default 0.9 (vllm-project/vllm
    ``vllm/config/cache.py`` @ c1d86421174a87056edc90a41dc9942391509e84: "The fraction of GPU
    memory to be used for the model executor ... If unspecified, will use the default value of
    0.9"; later releases moved it to 0.92, vllm ``vllm/config/cache.py`` @ 002f10e0). So the KV
    gets ``fraction x HBM - weights - runtime reserve``. Max batch: ``max_num_seqs`` of the API
    server, 1024 on a device with at least 70 GiB that is not an A100, else 256
    (``vllm/engine/arg_utils.py`` @ 99d7eb5d6a512cfcc5a2b104f24ebf2d6cda772b,
    ``EngineArgs._set_default_args``, ``UsageContext.OPENAI_API_SERVER``). Frontend ``server``:
    ``vllm bench serve`` measures through the OpenAI-compatible server.
``sglang``
    KV budget: ``mem_fraction_static`` = (weights + KV pool) / device memory, the rest left to
    activations and CUDA graphs; its default depends on the device memory:
    ``round((M - reserved) / M, 3)`` with M the device memory in MiB and ``reserved = 512 +
    1.5 max(chunked_prefill_size, 2048) + 2 cuda_graph_max_bs + 1024 tp pp / 8`` MiB (plus
    ``3 cuda_graph_max_bs dp`` with DP attention, ``1.5 cuda_graph_max_bs dp`` more above 300;
    at least 10 GiB above 60 GiB of memory; 6 GiB more for a draft model, 2 GiB for EAGLE/MTP),
    ``chunked_prefill_size`` and ``cuda_graph_max_bs`` by memory bucket (< 20 GiB: 2048, 8;
    < 35: 2048, 24 or 80 at TP >= 4; < 60: 4096, 32 or 160; < 160: 8192, 256 or 512; else
    16384, 512) (sgl-project/sglang ``python/sglang/srt/server_args.py``,
    ``ServerArgs._handle_gpu_memory_settings``, v0.5 series, PR #10975 "General heuristics for
    --mem-fraction-static"). KV: ``fraction x HBM - weights - runtime reserve``. Max batch:
    SGLang derives ``max_running_requests`` from the KV pool, no fixed default: the
    Deployment's ``max_batch`` stays. Frontend ``server`` (``sglang.bench_serving``).
``neuron`` (AWS Neuron, NxD Inference)
    Static shapes: prompts padded to context-encoding buckets and token generation to
    sequence-length buckets, ``generate_buckets(128, max_length)`` = powers of two from 128 below
    ``max_length`` plus ``max_length`` itself (aws-neuron/neuronx-distributed-inference
    ``src/neuronx_distributed_inference/modules/autobucketing.py`` @
    11b342a16e00443df12afeeddb9f25e5ace12f45; the model builders call it with 128), with
    ``max_context_length`` = the request's prompt and ``max_length`` = prompt + output when the
    request shape is known. KV budget and max batch as today's. Frontend ``server`` (vLLM on
    Neuron behind its API server).

KV admission (``serve --admission``, when not given): ``trtllm`` reserves each request's whole
output before admitting it (``CapacitySchedulerPolicy.GUARANTEED_NO_EVICT``, the default of
TensorRT-LLM's PyTorch ``BindCapacityScheduler``, ``tensorrt_llm/_torch/pyexecutor/scheduler.py``;
the published ``trtllm-bench`` rows behave like it, docs/serving.md); ``vllm`` admits
optimistically and preempts (recomputes) when the KV blocks run out (vLLM V1
``docs/configuration/optimization.md``, "Preemption": "vLLM can preempt requests to free up KV
cache space for other requests. Preempted requests are recomputed when sufficient KV cache
space becomes available again"); ``sglang`` admits on an estimate of the outputs still to come
(``new_token_ratio``, 0.7 decaying to 0.1 of the remaining tokens) and retracts running requests
when memory runs out, taken here as optimistic with preemption; ``neuron`` (vLLM on NxD
Inference) gives each sequence slot a cache of the full compiled length, a reservation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import log2
from typing import Any, Literal

from clusterplan.errors import SpecError
from clusterplan.training.step import Hardware

STACKS = ("trtllm", "vllm", "sglang", "neuron")
Stack = Literal["trtllm", "vllm", "sglang", "neuron"]
#: How a stack's ``kv_memory_fraction`` is read: a share of the memory left after the weights and
#: the runtime reserve ("free"), or of the whole device memory, weights and runtime included
#: ("total").
KV_BUDGET: dict[str, Literal["free", "total"]] = {"trtllm": "free", "vllm": "total", "sglang": "total",
                                                   "neuron": "free"}
#: KV admission each stack uses when ``--admission`` is not given (module doc).
ADMISSION: dict[str, Literal["reserve", "optimistic"]] = {"trtllm": "reserve", "vllm": "optimistic",
                                                          "sglang": "optimistic", "neuron": "reserve"}
#: TensorRT-LLM's context (prefill) attention on Hopper: its own fmha_v2 kernels, warp-specialised
#: TMA + GMMA ones on sm90 (NVIDIA/TensorRT-LLM ``cpp/kernels/fmha_v2/src/fmha/warpspec/``), the
#: design of FlashAttention-3; the fmha_v2 README's example run (head dim 128, causal, 1k tokens,
#: fp16, warp_spec) prints 468.94 TFLOP/s, where the FlashAttention-3 paper measures 423 for
#: FlashAttention-3 and 410 for cuDNN at that shape on H100: rated as FlashAttention-3
#: (docs/attention-kernels.md, section 7).
TRTLLM_ATTENTION = "flash3"
#: Each engine's default prefill library on a family where that library was measured (Hopper):
#: TensorRT-LLM above; vLLM's FLASH_ATTN backend (its default on sm90) runs FlashAttention-3 on
#: compute capability 9 (``get_flash_attn_version``: ``fa_version = 3 if device_capability.major
#: == 9``, vllm ``vllm/attention/utils/fa_utils.py`` @ 0fa99d44; since PR #12093, v0.7); SGLang
#: picks ``attention_backend = "fa3"`` on Hopper with CUDA >= 12.3 (``server_args.py``
#: ``_handle_attention_backend_compatibility`` @ 469c63e5; for Llama/Qwen since v0.4.6, every MHA
#: model since PR #17425). Neuron runs its own kernels on Trainium, whose libraries are unmeasured.
ENGINE_ATTENTION = {"trtllm": TRTLLM_ATTENTION, "vllm": "flash3", "sglang": "flash3"}
#: The chip vendors an engine runs on (others: refused).
VENDORS = {"trtllm": ("NVIDIA",), "neuron": ("AWS",)}
MIB = 2.0**20
GIB = 2.0**30
SOURCES = {
    "trtllm": "TensorRT-LLM docs/source/examples/kvcacheconfig.md @ e355779 (free_gpu_memory_fraction 0.9 "
              "of the memory free after weights); trtllm-bench: engine; context FMHA (fmha_v2, warp-specialised "
              "on sm90) at FlashAttention-3's rate",
    "vllm": "vLLM vllm/config/cache.py @ c1d8642 (gpu_memory_utilization 0.9 of the total); "
            "vllm/engine/arg_utils.py @ 99d7eb5 (max_num_seqs 1024 >= 70 GiB non-A100, else 256); "
            "vllm bench serve: server; FlashAttention-3 on Hopper (fa_utils.py @ 0fa99d44)",
    "sglang": "SGLang python/sglang/srt/server_args.py _handle_gpu_memory_settings, v0.5 (PR #10975): "
              "mem_fraction_static = (M - reserved) / M; sglang.bench_serving: server; fa3 on Hopper",
    "neuron": "NxD Inference modules/autobucketing.py @ 11b342a generate_buckets(128, max_length); "
              "vLLM on Neuron: server",
}


@dataclass(frozen=True)
class StackDefaults:
    """A stack's defaults resolved for one replica on one chip (module doc)."""

    stack: str
    kv_budget: Literal["free", "total"]
    values: dict[str, Any] = field(default_factory=dict)  # Deployment fields it would set

    def record(self, applied: tuple[str, ...]) -> dict[str, Any]:
        """For ``--json``: the stack, how its KV fraction is read, its defaults and which of them
        applied (the rest the user set)."""
        return {"name": self.stack, "kv_budget": self.kv_budget, "admission": ADMISSION[self.stack],
                "defaults": {key: list(v) if isinstance(v, tuple) else v for key, v in self.values.items()},
                "applied": list(applied), "source": SOURCES[self.stack]}


def generate_buckets(min_length: int, max_length: int) -> tuple[int, ...]:
    """NxD Inference's ``autobucketing.generate_buckets`` (module doc): powers of two from
    ``min_length`` up to, not including, ``2**round(log2(max_length))``, then ``max_length``."""
    if min_length >= max_length:
        return (max_length,)
    low, high = int(log2(min_length)), round(log2(max_length))
    return tuple(sorted({2**i for i in range(low, high) if 2**i < max_length} | {max_length}))


def sglang_mem_fraction_static(memory_bytes: float, tp: int, pp: int, attention_dp: int,
                               speculation: str | None = None) -> float:
    """SGLang's default ``mem_fraction_static`` on a device of ``memory_bytes`` (module doc;
    ``tp`` is SGLang's ``tp_size``, all the chips of a stage; ``speculation``: ``"draft"`` for a
    separate draft model (STANDALONE), any other method as EAGLE)."""
    gpu_mem = memory_bytes / MIB
    small_tp = tp < 4
    if gpu_mem < 20 * 1024:
        chunk, graph_bs = 2048, 8
    elif gpu_mem < 35 * 1024:
        chunk, graph_bs = 2048, 24 if small_tp else 80
    elif gpu_mem < 60 * 1024:
        chunk, graph_bs = 4096, 32 if small_tp else 160
    elif gpu_mem < 160 * 1024:
        chunk, graph_bs = 8192, 256 if small_tp else 512
    else:
        chunk, graph_bs = 16384, 512
    reserved = 512 + max(chunk, 2048) * 1.5 + graph_bs * 2 + tp * pp / 8 * 1024
    if attention_dp > 1:
        reserved += graph_bs * attention_dp * 3
        if graph_bs > 300:
            reserved += graph_bs * attention_dp * 1.5
    if gpu_mem > 60 * 1024:
        reserved = max(reserved, 10 * 1024)
    if speculation is not None:
        reserved += 6 * 1024 if speculation == "draft" else 2 * 1024
    return round((gpu_mem - reserved) / gpu_mem, 3)


def stack_defaults(stack: str, hardware: Hardware, tp: int, pp: int, attention_dp: int,
                   input_tokens: int | None = None, output_tokens: int | None = None,
                   speculation: str | None = None) -> StackDefaults:
    """The Deployment fields ``stack`` sets on ``hardware`` for a replica of this layout (module
    doc); the neuron buckets need the request shape (``input_tokens``, ``output_tokens``)."""
    if stack not in STACKS:
        raise SpecError("stack", stack, f"must be one of {', '.join(STACKS)}")
    chip = hardware.chip
    vendors = VENDORS.get(stack)
    if vendors is not None and chip.vendor not in vendors:
        raise SpecError("stack", stack, f"runs on {'/'.join(vendors)} chips, not {chip.name} ({chip.vendor})")
    values: dict[str, Any] = {}
    if stack == "trtllm":
        values = {"kv_memory_fraction": 0.9, "max_batch": 2048, "frontend": "engine"}
    elif stack == "vllm":
        large = chip.hbm_bytes >= 70 * GIB and "a100" not in chip.name.lower()
        values = {"kv_memory_fraction": 0.9, "max_batch": 1024 if large else 256, "frontend": "server"}
    elif stack == "sglang":
        values = {"kv_memory_fraction": sglang_mem_fraction_static(chip.hbm_bytes, attention_dp * tp, pp,
                                                                   attention_dp, speculation),
                  "frontend": "server"}
    else:
        values = {"frontend": "server"}
        if input_tokens is not None and output_tokens is not None:
            values["prefill_buckets"] = generate_buckets(128, input_tokens)
            values["decode_buckets"] = generate_buckets(128, input_tokens + output_tokens)
    if stack in ENGINE_ATTENTION and hardware.attention_kernel_measured(ENGINE_ATTENTION[stack]):
        values["attention_kernel"] = ENGINE_ATTENTION[stack]  # a family where the engine's library was measured
    return StackDefaults(stack, KV_BUDGET[stack], values)


def apply_stack(deployment: Any, hardware: Hardware, input_tokens: int | None = None,
                output_tokens: int | None = None, speculation: str | None = None) -> tuple[Any, dict[str, Any] | None]:
    """``deployment`` with its stack's defaults in every field the user did not set
    (``model_fields_set``), and the stack's JSON record; unchanged and ``None`` without a stack."""
    stack = getattr(deployment, "stack", None)
    if stack is None:
        return deployment, None
    defaults = stack_defaults(stack, hardware, deployment.tp, deployment.pp, deployment.attention_dp,
                              input_tokens, output_tokens, speculation)
    update = {key: value for key, value in defaults.values.items() if key not in deployment.model_fields_set}
    resolved = deployment.model_copy(update=update) if update else deployment
    return resolved, defaults.record(tuple(update))
