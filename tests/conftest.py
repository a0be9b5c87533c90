"""Shared fixtures: small hand-made specs so core tests do not depend on catalog values."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from clusterplan.costs.compute import Efficiency
from clusterplan.specs import Chip, Model, System
from clusterplan.training.step import Hardware

SOURCE = "test fixture"


@pytest.fixture
def chip() -> Chip:
    return Chip(name="test-chip", vendor="test", family="test", launch_year=2024,
                peak_flops={"bf16": 1e15, "fp8": 2e15}, hbm_bytes=80e9, hbm_bandwidth=3e12,
                tdp_w=700, source=SOURCE)


@pytest.fixture
def switch_system() -> System:
    """8 chips per node on a 400 GB/s switch, then a 50 GB/s network; no latency, no losses."""
    return System(name="test-switch", chip="test-chip", chips_per_node=8, source=SOURCE, tiers=[
        {"name": "nvlink", "topology": "switch", "size": 8, "bandwidth": 400e9, "latency_s": 0,
         "efficiency": 1.0, "source": SOURCE},
        {"name": "network", "topology": "switch", "size": None, "bandwidth": 50e9, "latency_s": 0,
         "efficiency": 1.0, "source": SOURCE},
    ])


@pytest.fixture
def torus_system() -> System:
    """A 4x4 torus of 16 chips (100 GB/s per chip in all), then a 25 GB/s network."""
    return System(name="test-torus", chip="test-chip", chips_per_node=16, source=SOURCE, tiers=[
        {"name": "torus", "topology": "torus", "size": 16, "dims": [4, 4], "bandwidth": 100e9,
         "latency_s": 0, "efficiency": 1.0, "source": SOURCE},
        {"name": "network", "topology": "switch", "size": None, "bandwidth": 25e9, "latency_s": 0,
         "efficiency": 1.0, "source": SOURCE},
    ])


@pytest.fixture
def efficiency() -> Efficiency:
    return Efficiency(family="test", matmul={"bf16": 0.8, "fp8": 0.6}, attention=0.5, hbm=0.8,
                      kernel_overhead_s=0.0, reserved_bytes=0.0)


@pytest.fixture
def hardware(switch_system: System, chip: Chip, efficiency: Efficiency) -> Hardware:
    return Hardware(system=switch_system, chip=chip, efficiency=efficiency)


@pytest.fixture
def gpt22b() -> Model:
    """Korthikanti et al. 2022's 22B GPT (Table 3): h=6144, a=64, L=48, V=51200."""
    return Model(name="gpt-22b", layers=48, hidden_size=6144, ffn_hidden_size=4 * 6144,
                 attention_heads=64, kv_heads=64, vocab_size=51200, ffn_activation="gelu",
                 dropout=True, tied_embeddings=True, source=SOURCE)


@pytest.fixture
def llama_like() -> Model:
    """A small GQA/SwiGLU model."""
    return Model(name="llama-like", layers=32, hidden_size=4096, ffn_hidden_size=14336,
                 attention_heads=32, kv_heads=8, vocab_size=128256, ffn_activation="swiglu",
                 source=SOURCE)


@pytest.fixture
def cli_run(capsys: pytest.CaptureFixture[str]) -> Callable[[list[str]], tuple[int, str, str]]:
    """Drive ``clusterplan argv`` in-process: (exit code, stdout, stderr); a return is code 0."""
    from cliutil import run_cli

    return lambda argv: run_cli(capsys, argv)
