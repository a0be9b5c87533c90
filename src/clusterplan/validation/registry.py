"""The registry of validation tables: every table name and the adapter that turns its rows into
cases (training tables first, in report order, then the serving tables).

It imports every adapter module; none of them imports it, so the adapters form no cycle
(``cases.py`` keeps ``TABLES``, ``known_tables`` and ``all_cases`` as lazy aliases of these)."""

from __future__ import annotations

from collections.abc import Callable

from clusterplan.validation.case import Case
from clusterplan.validation.cases import (
    korthikanti2022,
    maxtext_tpu,
    megatron_core_h100_2024,
    megatron_sc21,
    nemo_perf,
    nemo_perf_moe,
    neuron_trn,
)
from clusterplan.validation.cases_axlearn import axlearn_2025
from clusterplan.validation.cases_bloom import bloom_176b
from clusterplan.validation.cases_llmfoundry import llmfoundry_mpt
from clusterplan.validation.cases_mbridge import megatron_bridge_recipes
from clusterplan.validation.cases_mlperf import mlperf_training
from clusterplan.validation.cases_mlperf_llama import mlperf_training_llama31
from clusterplan.validation.cases_modelzoo import megatron_moe_modelzoo
from clusterplan.validation.cases_mtnlg import mtnlg_2022
from clusterplan.validation.cases_palm import palm_table3
from clusterplan.validation.cases_torchtitan import torchtitan
from clusterplan.validation.cases_zero3 import megatron_sc21_table2_zero3
from clusterplan.validation.inference_cases import INFERENCE_TABLES

#: The training tables, in report order.
TRAINING_TABLES: dict[str, Callable[[], list[Case]]] = {
    "megatron_sc21": megatron_sc21,
    "korthikanti2022": korthikanti2022,
    "megatron_core_h100_2024": megatron_core_h100_2024,
    "nemo_perf": nemo_perf,
    "nemo_perf_moe": nemo_perf_moe,
    "megatron_moe_modelzoo": megatron_moe_modelzoo,
    "maxtext_tpu": maxtext_tpu,
    "neuron_trn": neuron_trn,
    "megatron_sc21_table2_zero3": megatron_sc21_table2_zero3,
    "mlperf_training": mlperf_training,
    "mlperf_training_llama31": mlperf_training_llama31,
    "mtnlg_2022": mtnlg_2022,
    "llmfoundry_mpt": llmfoundry_mpt,
    "bloom_176b": bloom_176b,
    "palm_table3": palm_table3,
    "torchtitan": torchtitan,
    "axlearn_2025": axlearn_2025,
    "megatron_bridge_recipes": megatron_bridge_recipes,
}


#: Training tables with no published speed: each row is a memory test only (it ran, so it fits).
MEMORY_ONLY_TABLES = frozenset({"megatron_bridge_recipes"})


def known_tables() -> dict[str, Callable[[], list[Case]]]:
    """Every validation table: the training tables, then the serving tables."""
    return {**TRAINING_TABLES, **INFERENCE_TABLES}


def all_cases(tables: list[str] | None = None) -> list[Case]:
    """The cases of ``tables`` (every table when None), in table order."""
    known = known_tables()
    names = tables or list(known)
    result: list[Case] = []
    for name in names:
        result.extend(known[name]())
    return result
