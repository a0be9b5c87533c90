"""A parallel training plan and the rules that make it valid for a model on a cluster.

Rank placement (innermost first): TP, CP, DP, PP — Megatron-LM's default order
(``tp-cp-ep-dp-pp``), which keeps the chattiest groups on the fastest tier. MoE layers fold the
same ranks differently (Megatron-Core "parallel folding"): expert-TP innermost, then EP, then
expert data parallelism, so ``ep * etp`` must divide ``tp * cp * dp``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from clusterplan.errors import SpecError
from clusterplan.specs._base import Spec
from clusterplan.specs.chip import Precision
from clusterplan.specs.model import Model

Recompute = Literal["none", "selective", "full"]
#: The fused-attention library (costs/attention.py); codes in this order, 0 = auto.
AttentionKernel = Literal["auto", "flash1", "flash2", "cudnn", "flash3"]
ATTENTION_KERNEL_CODES: dict[str, int] = {"auto": 0, "flash1": 1, "flash2": 2, "cudnn": 3, "flash3": 4}
#: What selective recompute re-runs in backward (Megatron-Core ``--recompute-modules``):
#: ``core_attn`` the attention core (Korthikanti et al. 2022, section 5; Megatron's default),
#: ``layernorm`` the norms that are separate kernels (a MoE layer's pre-FFN norm; Megatron-Core
#: fuses the others into the following linear), ``moe_act`` the routed experts' activation;
#: ``elementwise`` every norm and activation function, keeping the projections' outputs and the
#: layer input instead of their inputs (MaxText remat_policy 'minimal': jax
#: save_only_these_names over the query/key/value, out_proj, mlpwi and mlpwo outputs).
#: Megatron-Core's checkpointed submodules (megatron/core/transformer/transformer_config.py,
#: ``recompute_modules``): ``mla_up_proj`` MLA's Q and KV up-projections and the RoPE/concat after
#: them, whose per-head Q, K and V are discarded once the attention core has run and rebuilt from
#: the kept latents in backward (multi_latent_attention.py, CheckpointWithoutOutput; MLA models
#: only, as Megatron-Core requires); ``mlp`` a dense layer's whole MLP, keeping only its input
#: (transformer_layer.py: MoE layers are skipped); ``moe`` a MoE layer's whole forward (router,
#: dispatch, routed and shared experts, combine) from its input (moe/moe_layer.py; Megatron-Core
#: forbids it with the EP all-to-all overlap); ``shared_experts`` the shared experts from their
#: input (moe/moe_layer.py, shared_experts_compute).
RecomputeModule = Literal["core_attn", "layernorm", "moe_act", "elementwise", "mla_up_proj", "mlp", "moe",
                          "shared_experts"]
#: Submodules whose *input* Megatron-Core's fine-grained activation offloading moves to host
#: memory between forward and backward (``--fine-grained-activation-offloading --offload-modules``;
#: megatron/core/transformer/transformer_config.py ``offload_modules``, NVIDIA/Megatron-LM at
#: d98e8a64): ``attn_norm`` and ``mlp_norm`` the two norms' inputs, ``qkv_linear`` the QKV
#: projection's input, ``core_attn`` the attention core's Q, K and V, ``attn_proj`` the attention
#: output (Megatron-Core requires ``core_attn`` with it), ``expert_fc1`` the routed tokens entering
#: the experts, ``moe_act`` the experts' up-projection outputs (MoE models only).
OffloadModule = Literal["attn_norm", "qkv_linear", "core_attn", "attn_proj", "mlp_norm", "expert_fc1", "moe_act"]
#: Bit of each offloaded submodule in PlanBatch.offload_modules.
OFFLOAD_MODULE_BITS: dict[str, int] = {"attn_norm": 1, "qkv_linear": 2, "core_attn": 4, "attn_proj": 8,
                                        "mlp_norm": 16, "expert_fc1": 32, "moe_act": 64}
#: The largest job the tools accept: two orders of magnitude beyond any planned cluster.
MAX_CHIPS = 100_000_000

RECOMPUTE_CODES: dict[str, int] = {"none": 0, "selective": 1, "full": 2}
#: Bit of each selective-recompute module in PlanBatch.recompute_modules.
RECOMPUTE_MODULE_BITS: dict[str, int] = {"core_attn": 1, "layernorm": 2, "moe_act": 4, "elementwise": 8,
                                          "mla_up_proj": 16, "mlp": 32, "moe": 64, "shared_experts": 128}
DEFAULT_RECOMPUTE_MODULES: tuple[RecomputeModule, ...] = ("core_attn",)
PRECISION_CODES: dict[str, int] = {"fp32": 0, "bf16": 1, "fp8": 2, "fp4": 3}


def check_recompute_modules(model: Model, modules: tuple[str, ...], overlap_ep: bool = False) -> None:
    """Refuse selective-recompute modules that ``model`` has nothing for, or that do not combine
    (SpecError on ``recompute_modules``): Plan validation and the search's shared settings."""
    if model.mla is not None and "elementwise" in modules:
        raise SpecError("recompute_modules", "elementwise", f"not modelled for MLA (model {model.name})")
    for module in ("moe_act", "moe", "shared_experts"):
        if model.moe is None and module in modules:
            raise SpecError("recompute_modules", module, f"model {model.name} has no experts")
    if model.mla is None and "mla_up_proj" in modules:
        raise SpecError("recompute_modules", "mla_up_proj",
                        f"only for multi-latent attention; model {model.name} has none "
                        "(Megatron-Core refuses it too)")
    if model.moe is not None and not model.moe.shared_experts and "shared_experts" in modules:
        raise SpecError("recompute_modules", "shared_experts", f"model {model.name} has no shared experts")
    if model.dense_ffn_layers == 0 and "mlp" in modules:
        raise SpecError("recompute_modules", "mlp",
                        f"model {model.name} has no dense MLP layers (mlp skips MoE layers; use moe)")
    megatron_only = sorted({"mla_up_proj", "mlp", "moe", "shared_experts"} & set(modules))
    if "elementwise" in modules and megatron_only:
        raise SpecError("recompute_modules", ",".join(modules),
                        f"elementwise (MaxText's policy) does not combine with Megatron-Core's "
                        f"{', '.join(megatron_only)}")
    if overlap_ep and "moe" in modules:
        raise SpecError("recompute_modules", "moe",
                        "re-runs the EP all-to-alls that overlap_ep overlaps (Megatron-Core refuses the two "
                        "together)")


def check_offload_modules(model: Model, modules: tuple[str, ...], recompute: str = "selective",
                          recompute_modules: tuple[str, ...] = DEFAULT_RECOMPUTE_MODULES) -> None:
    """Refuse offloaded submodules the model has nothing for, or that do not combine with the
    recompute (SpecError on ``offload_modules``): Plan validation and the search's shared
    settings (there ``recompute`` is each selective plan's; full-recompute plans drop them)."""
    if len(set(modules)) != len(modules):
        raise SpecError("offload_modules", ",".join(modules), "lists a module twice")
    for module in ("expert_fc1", "moe_act"):
        if module in modules and model.moe is None:
            raise SpecError("offload_modules", module, f"model {model.name} has no experts")
    if "attn_proj" in modules and "core_attn" not in modules:
        raise SpecError("offload_modules", "attn_proj",
                        "needs core_attn too: the projection's input is the attention core's output, which its "
                        "backward needs (Megatron-Core refuses it alone)")
    if recompute == "full" and modules:
        raise SpecError("offload_modules", ",".join(modules),
                        "full recompute keeps only each layer's input: nothing is left to offload")
    if recompute == "selective" and "elementwise" in recompute_modules and modules:
        raise SpecError("offload_modules", ",".join(modules),
                        "elementwise recompute (MaxText's policy) does not combine with Megatron-Core's offloading")
    inside_moe = sorted({"expert_fc1", "moe_act"} & set(modules))
    if recompute == "selective" and "moe" in recompute_modules and inside_moe:
        raise SpecError("offload_modules", ",".join(inside_moe),
                        "recomputing the whole MoE layer (recompute_modules moe) keeps nothing inside it to offload "
                        "(Megatron-Core refuses the two together)")


def balanced_layer_split(layers: int, pp: int, vp: int = 1) -> tuple[int, int, int] | None:
    """(first, middle, last) layers per pipeline rank: an even split when ``pp`` divides the
    layers, else middle stages of ceil(layers/pp) with the remainder shared by the first and last
    stage, an odd layer going to the first (Llama 3 405B ``7+14x8+7``; DeepSeek-V3 on PP16
    ``3+14x4+2``; Megatron's embedding/loss-aware split: the last stage also carries the LM head
    and loss). With interleaving (``vp`` > 1) the middle stages must split into ``vp`` chunks and
    the first and last stages may be lighter than a middle stage by fewer than ``vp`` layers.
    None if impossible."""
    if pp < 1 or pp > layers or vp < 1:
        return None
    split = _pipeline_split(layers, pp)
    if split is None or vp == 1:
        return split
    first, middle, last = split
    if pp == 1 or middle % vp != 0 or min(first, last) + vp <= middle:
        return None
    return split


def _pipeline_split(layers: int, pp: int) -> tuple[int, int, int] | None:
    if layers % pp == 0:
        return layers // pp, layers // pp, layers // pp
    if pp < 3:
        return None
    middle = -(-layers // pp)
    rest = layers - (pp - 2) * middle
    first, last = rest - rest // 2, rest // 2
    if last >= 1 and first <= middle:
        return first, middle, last
    return None


class Plan(Spec):
    """One way to run a training step. Batch sizes count sequences."""

    tp: int = Field(default=1, ge=1, le=1024)
    pp: int = Field(default=1, ge=1, le=4096)
    vp: int = Field(default=1, ge=1, le=256, description="virtual stages per pipeline rank (interleaving)")
    cp: int = Field(default=1, ge=1, le=1024)
    dp: int = Field(default=1, ge=1, le=100_000_000)
    ep: int = Field(default=1, ge=1, le=4096)
    etp: int = Field(default=1, ge=1, le=1024, description="expert tensor parallelism")
    capacity_factor: float | None = Field(
        default=None, gt=0, le=64,
        description="expert capacity as a multiple of the balanced load (token dropping); None = dropless")
    routing_gini: float | None = Field(
        default=None, ge=0, lt=1,
        description="Gini coefficient of the per-expert token load; None = 0, balanced, as published "
        "training runs are (0.2: trained checkpoints routing real text, Ma et al. 2026)")
    overlap_ep: bool = Field(
        default=False, description="EP all-to-alls overlapped with another micro-batch's compute (DualPipe-style)")
    ep_dedup: bool = Field(
        default=False,
        description="EP dispatch sends each token once per destination node and forwards it inside "
        "(DeepEP, HybridEP), fp8 in fp8/fp4 plans; off: a flat all-to-all of every routed copy in bf16")
    ep_within_scale_up: bool = Field(
        default=False, description="require each EP x ETP group inside one scale-up domain")
    mtp: int = Field(default=0, ge=0, le=8, description="multi-token-prediction depth (DeepSeek-V3: 1)")
    micro_batch: int = Field(default=1, ge=1, le=65_536)
    global_batch: int = Field(ge=1, le=100_000_000)
    seq_len: int = Field(ge=1, le=10_000_000)
    recompute: Recompute = "selective"
    recompute_modules: tuple[RecomputeModule, ...] = Field(
        default=DEFAULT_RECOMPUTE_MODULES, min_length=1,
        description="what selective recompute re-runs (Megatron --recompute-modules); only with "
        "recompute='selective'")
    sp: bool = Field(default=True, description="sequence parallelism (only meaningful when tp > 1)")
    zero: Literal[0, 1, 2, 3] = 1
    dp_shard: int | None = Field(
        default=None, ge=1,
        description="ZeRO sharding group (HSDP): shard over this many of the dp*cp replicas, "
        "replicate across the rest; default all",
    )
    precision: Precision = "bf16"
    fp8_params: bool = Field(
        default=False,
        description="fp8 (and fp4) plans keep the weights themselves in fp8 (NVFP4) (Megatron "
        "--fp8-param-gather, --fp4-param-gather): no bf16 copy beside the quantized one; the fp32 master "
        "copy stays in the optimizer")
    offload_qkv: bool = Field(
        default=False,
        description="full recompute keeps the Q/K/V projection outputs, offloaded to host memory, and "
        "re-runs the rest of the forward (MaxText remat policy 'qkv_proj_offloaded'); needs recompute='full'")
    offload_layers: int = Field(
        default=0, ge=0,
        description="layers whose activations are offloaded to host memory between forward and "
        "backward (Megatron --cpu-offloading-num-layers, activations only; needs pp=1)")
    offload_modules: tuple[OffloadModule, ...] = Field(
        default=(),
        description="submodules whose inputs are offloaded to host memory between forward and backward "
        "(Megatron-Core --fine-grained-activation-offloading --offload-modules): attn_norm, qkv_linear, "
        "core_attn, attn_proj, mlp_norm, expert_fc1, moe_act; the copies overlap compute (not timed)")
    fused_cross_entropy: bool = Field(
        default=False,
        description="a cross-entropy kernel that reads the bf16 logits and overwrites them with their "
        "gradient (Transformer Engine parallel_cross_entropy, Megatron cross_entropy_fusion_impl='te'): "
        "no fp32 copy of the logits")
    loss_chunks: int = Field(
        default=1, ge=1, le=4096,
        description="the logits and cross-entropy are computed this many token chunks at a time "
        "(MaxText num_vocab_tiling): only one chunk's logits are live")
    grad_reduce: Literal["fp32", "bf16"] = Field(
        default="bf16",
        description="gradient buffer and reduction dtype: 'bf16' is any 16-bit one (the NeMo and "
        "Megatron-Bridge performance recipes' grad_reduce_in_fp32=False, fp16 runs); 'fp32' is "
        "Megatron-LM's default for bf16 runs and FSDP's fp32 reduce",
    )
    optimizer_moments: Literal["fp32", "bf16"] = Field(
        default="fp32",
        description="dtype of Adam's two moments: 'bf16' is Megatron-Core's precision-aware optimizer "
        "(--use-precision-aware-optimizer --exp-avg-dtype bf16 --exp-avg-sq-dtype bf16, NVIDIA's "
        "DeepSeek-V3 recipes); the fp32 master weights stay")
    overlap_dp: bool = Field(default=True, description="DP reduction overlaps backward (bucketed)")
    overlap_tp: bool = Field(default=False, description="TP collectives overlapped with GEMMs")
    overlap_pp: bool = Field(
        default=True, description="pipeline sends overlapped with compute (interleaved schedule)")
    flash_attention: bool = Field(default=True, description="fused attention (no s x s scores kept)")
    attention_kernel: AttentionKernel = Field(
        default="auto",
        description="the fused-attention library: flash1 (FlashAttention 1.x), flash2 (FlashAttention-2, "
        "PyTorch SDPA's flash backend), cudnn (Transformer Engine's fused attention on Hopper and later), flash3 "
        "(FlashAttention-3); auto: the chip family's reference kernel (cudnn; flash2 on Ampere)")
    first_stage_layers: int | None = Field(default=None, ge=0)
    last_stage_layers: int | None = Field(default=None, ge=0)

    @property
    def chips(self) -> int:
        return self.tp * self.pp * self.cp * self.dp

    @property
    def micro_batches(self) -> int:
        """Micro-batches per pipeline per step (gradient-accumulation steps)."""
        return self.global_batch // (self.micro_batch * self.dp)

    def stage_layers(self, model: Model) -> tuple[int, int, int]:
        """(first, middle, last) layers per pipeline rank."""
        layers = model.layers
        if self.pp == 1:
            return layers, layers, layers
        first = self.first_stage_layers
        last = self.last_stage_layers
        if first is None and last is None:
            even = layers // self.pp
            return even, even, even
        first = first if first is not None else (layers - (last or 0)) // (self.pp - 1)
        last = last if last is not None else (layers - first) // (self.pp - 1)
        middle_stages = self.pp - 2
        middle = (layers - first - last) // middle_stages if middle_stages > 0 else 0
        return first, middle, last

    def with_balanced_split(self, model: Model) -> Plan:
        """This plan with :func:`balanced_layer_split` filled in when no first/last stage layers
        are given and ``pp*vp`` does not divide the layers (unchanged otherwise); a SpecError on
        ``pp`` naming pp, vp and the rule when no balanced split exists."""
        layers = model.layers
        if (self.pp == 1 or self.pp > layers or self.first_stage_layers is not None
                or self.last_stage_layers is not None or layers % (self.pp * self.vp) == 0):
            return self
        split = balanced_layer_split(layers, self.pp, self.vp)
        if split is None:
            middle = -(-layers // self.pp)
            chunks = (f", divisible by vp={self.vp}; the rest shared by the first and last "
                      "stage, each lighter by fewer than vp layers" if self.vp > 1 else
                      "; the rest shared by the first and last stage, at least one layer each")
            raise SpecError(
                "pp", self.pp,
                f"layers={layers} must be divisible by pp*vp={self.pp}*{self.vp}, or split in balance "
                f"(middle stages of ceil(layers/pp)={middle} layers{chunks}); or give first/last "
                "stage layers",
            )
        return self.model_copy(update={"first_stage_layers": split[0], "last_stage_layers": split[2]})

    def validate_placement(self, scale_up_size: int) -> Plan:
        """Placement rules that need the system: with ``ep_within_scale_up``, every EP x ETP
        group must sit inside one scale-up domain (NVLink, UltraServer)."""
        if self.ep_within_scale_up and self.ep * self.etp > scale_up_size:
            raise SpecError("ep", self.ep, f"ep*etp = {self.ep * self.etp} exceeds the scale-up domain of "
                            f"{scale_up_size} chips (ep_within_scale_up is set)")
        return self

    def validate_for(self, model: Model, chips: int | None = None) -> Plan:
        """Raise SpecError naming the field, value and rule that the plan breaks."""
        if chips is not None and self.chips != chips:
            raise SpecError(
                "dp", self.dp,
                f"tp*pp*cp*dp = {self.tp}*{self.pp}*{self.cp}*{self.dp} = {self.chips} must equal "
                f"chips={chips}",
            )
        if model.attention_heads % self.tp != 0:
            raise SpecError("tp", self.tp, f"must divide attention_heads={model.attention_heads}")
        if self.tp > model.kv_heads and self.tp % model.kv_heads != 0:
            raise SpecError("tp", self.tp, f"must divide or be a multiple of kv_heads={model.kv_heads}")
        if self.tp <= model.kv_heads and model.kv_heads % self.tp != 0:
            raise SpecError("tp", self.tp, f"must divide kv_heads={model.kv_heads}")
        if self.vp > 1 and self.pp == 1:
            raise SpecError("vp", self.vp, "interleaving (vp > 1) needs pp > 1")
        if self.seq_len % (2 * self.cp if self.cp > 1 else 1) != 0:
            raise SpecError("cp", self.cp,
                            f"seq_len={self.seq_len} must be divisible by 2*cp (load-balanced ring attention)")
        if model.moe is not None and model.moe.experts % self.ep != 0:
            raise SpecError("ep", self.ep, f"must divide moe.experts={model.moe.experts}")
        if self.recompute_modules != DEFAULT_RECOMPUTE_MODULES and self.recompute != "selective":
            raise SpecError("recompute_modules", ",".join(self.recompute_modules),
                            f"only apply with recompute='selective' (recompute is '{self.recompute}')")
        check_recompute_modules(model, self.recompute_modules, self.overlap_ep)
        if self.fp8_params and self.precision not in ("fp8", "fp4"):
            raise SpecError("fp8_params", self.fp8_params, f"needs precision fp8 or fp4 (is {self.precision})")
        if self.offload_qkv and self.recompute != "full":
            raise SpecError("offload_qkv", self.offload_qkv, f"needs recompute='full' (is '{self.recompute}')")
        if self.offload_layers and self.pp != 1:
            raise SpecError("offload_layers", self.offload_layers,
                            "activation offloading needs pp=1 (Megatron has no pipeline support for it)")
        if self.offload_layers >= model.layers:
            raise SpecError("offload_layers", self.offload_layers, f"must be below layers={model.layers}")
        check_offload_modules(model, self.offload_modules, self.recompute, self.recompute_modules)
        if model.moe is None and self.ep != 1:
            raise SpecError("ep", self.ep, f"model {model.name} has no experts; ep must be 1")
        if model.moe is None and self.etp != 1:
            raise SpecError("etp", self.etp, f"model {model.name} has no experts; etp must be 1")
        if model.moe is not None:
            folded = self.tp * self.cp * self.dp
            if folded % (self.ep * self.etp) != 0:
                raise SpecError("ep", self.ep, f"ep*etp = {self.ep}*{self.etp} must divide tp*cp*dp = {folded} "
                                "(MoE parallel folding)")
            if model.moe.expert_ffn_hidden_size % self.etp != 0:
                raise SpecError("etp", self.etp,
                                f"must divide moe.expert_ffn_hidden_size={model.moe.expert_ffn_hidden_size}")
        if self.dp_shard is not None and (self.dp * self.cp) % self.dp_shard != 0:
            raise SpecError("dp_shard", self.dp_shard, f"must divide dp*cp={self.dp * self.cp}")
        per_step = self.micro_batch * self.dp
        if self.global_batch % per_step != 0:
            raise SpecError(
                "global_batch", self.global_batch,
                f"must be divisible by micro_batch*dp = {self.micro_batch}*{self.dp} = {per_step}",
            )
        self._validate_layers(model)
        return self

    def _validate_layers(self, model: Model) -> None:
        layers = model.layers
        if self.pp > layers:
            raise SpecError("pp", self.pp, f"exceeds layers={layers}")
        if self.first_stage_layers is None and self.last_stage_layers is None:
            if layers % (self.pp * self.vp) != 0:
                raise SpecError(
                    "pp", self.pp,
                    f"layers={layers} must be divisible by pp*vp={self.pp * self.vp} "
                    "(or set first/last stage layers for an uneven split)",
                )
            return
        if self.pp < 2:
            raise SpecError("pp", self.pp, "first/last stage layers need pp >= 2")
        first, middle, last = self.stage_layers(model)
        assigned = first + last + middle * max(self.pp - 2, 0)
        if assigned != layers or first < 1 or last < 1 or (self.pp > 2 and middle < 1):
            raise SpecError(
                "first_stage_layers", self.first_stage_layers,
                f"with last_stage_layers={self.last_stage_layers}, the other {max(self.pp - 2, 0)} "
                f"stages must split the remaining layers of {layers} evenly",
            )
        # First and last stages may hold fewer layers than vp chunks' worth (Megatron counts the
        # embedding and loss as layers there); the middle stages split evenly into chunks.
        if self.pp > 2 and middle % self.vp != 0:
            raise SpecError("pp", self.pp, f"middle stages get {middle} layers, not divisible by vp={self.vp}")
