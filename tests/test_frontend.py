"""Engine-only vs behind-an-API-server latency (Deployment.frontend, issue #17)."""

from __future__ import annotations

import pytest

from clusterplan.catalog import hardware_for, load_model, load_system
from clusterplan.inference.step import Deployment, ReplicaModel


def test_an_engine_only_measurement_adds_no_request_latency_and_changes_nothing_else() -> None:
    model, hardware = load_model("llama3-8b"), hardware_for(load_system("dgx-h100"))
    server = ReplicaModel(model, hardware, Deployment())
    engine = ReplicaModel(model, hardware, Deployment(frontend="engine"))
    fitted = hardware.efficiency.serving_request_latency_s
    assert fitted > 0
    assert server.single_request_ttft(2000) - engine.single_request_ttft(2000) == pytest.approx(fitted)
    assert engine.decode_time(1, 2100) == server.decode_time(1, 2100)
    assert engine.offline_throughput(1000, 200) == server.offline_throughput(1000, 200)


def test_the_frontend_is_one_of_two_settings() -> None:
    with pytest.raises(ValueError, match="server"):
        Deployment(frontend="api")  # type: ignore[arg-type]
