"""The software stack of each chip family: which families share fitted efficiencies when a
family has no published rows (calibrate.py's rule), and how the extrapolation flags name it.
A light module (no numpy/scipy), so that bands.py can name a family's stack without loading
the calibration."""

from __future__ import annotations

#: Software stack of each chip family: a family without rows for a stage takes the stage's fit
#: from the other families of its stack (GPUs share PyTorch/Megatron-LM, CUDA or ROCm: ada,
#: rtx-blackwell and the AMD families have no rows and take the CUDA families' fit; TPUs
#: XLA/MaxText; Trainium the Neuron SDK). Intel Gaudi runs its own stack (SynapseAI graph
#: compiler, Optimum Habana / Megatron-DeepSpeed forks) and no Gaudi family has published rows,
#: so Gaudi takes one fit of every family's rows (the rule's last step) and says so.
#: New families are appended (efficiency.yaml and crossval.yaml list families in this order).
STACKS: dict[str, str] = {
    "ampere": "gpu", "hopper": "gpu", "blackwell": "gpu", "cdna3": "gpu",
    "trainium1": "neuron", "trainium2": "neuron", "trainium3": "neuron",
    "tpu-v4": "tpu", "tpu-v5e": "tpu", "tpu-v5p": "tpu",
    "ada": "gpu", "rtx-blackwell": "gpu", "cdna4": "gpu",
    "tpu-v6e": "tpu", "tpu-v7": "tpu",
    "gaudi2": "gaudi", "gaudi3": "gaudi",
}
ALL_FAMILIES = tuple(STACKS)

#: Software stack names as `extrapolation` flags spell them.
STACK_NAMES = {"gpu": "CUDA/ROCm (PyTorch, Megatron-LM)", "tpu": "XLA (JAX/MaxText)",
               "neuron": "Neuron SDK", "gaudi": "Gaudi SynapseAI"}

#: Runtime/communicator/allocator reserve per stack (not fitted: no memory data published).
#: Gaudi's is an assumption: the GPU figure (runtime, HCCL buffers, allocator slack).
RESERVED_BYTES = {"gpu": 3.0 * 2**30, "tpu": 1.0 * 2**30, "neuron": 2.0 * 2**30, "gaudi": 3.0 * 2**30}
