"""`clusterplan sweep`: the sweep-file schema, refusals, executors (local pool and Ray, for real),
Parquet output and JSON output."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml
from rich.console import Console

from cliutil import run_cli
from clusterplan import cli
from clusterplan.distributed import LocalExecutor, RayExecutor, make_executor
from clusterplan.errors import SpecError
from clusterplan.sweep import PLAN_FIELDS, load_sweep, run_sweep, write_parquet

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "sweep-small.yaml"
SMALL = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))




def write(tmp_path: Path, data: Any, name: str = "sweep.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data), encoding="utf-8")
    return path


def comparable(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows without the one column that depends on the machine's speed."""
    return [{k: v for k, v in row.items() if k != "search_time_s"} for row in rows]


@pytest.fixture(scope="module")
def small_rows() -> list[dict[str, Any]]:
    """The example sweep run in-process: the reference rows."""
    return run_sweep(load_sweep(EXAMPLE), LocalExecutor(workers=1))


# ---- schema and refusals ------------------------------------------------------------------
@pytest.mark.parametrize(("change", "needles"), [
    ({"colour": "blue"}, ["colour", "unknown key", "models"]),
    ({"overrides": {"max_tq": [8]}}, ["overrides", "max_tq", "unknown key", "max_tp"]),
    ({"chips": []}, ["chips", "at least one"]),
    ({"chips": [64, -8]}, ["chips[1]", "-8", "greater than or equal to 1"]),
    ({"chips": 64}, ["chips", "must be a list"]),
    ({"chips": [64, 64]}, ["chips", "twice"]),
    ({"models": ["llama3-8b", "llama3-9000"]}, ["models[1]", "llama3-9000", "unknown model"]),
    ({"systems": ["dgx-h100", "dgx-h999"]}, ["systems[1]", "dgx-h999", "unknown system"]),
    ({"precision": [["bf16"], ["fp32"]]}, ["precision[1][0]", "fp32"]),
    ({"tokens": "15X"}, ["tokens", "15X"]),
    ({"max_memory_fraction": 1.5}, ["max_memory_fraction", "1.5"]),
    ({"objective": "speed"}, ["objective", "speed"]),
    ({"overrides": {"max_tp": [8, 0]}}, ["overrides.max_tp[1]", "0"]),
    ({"overrides": {"recompute": [["none"], ["some"]]}}, ["overrides.recompute[1][0]", "some"]),
    ({"overrides": {"zero": [[1, 1]]}}, ["overrides.zero", "twice"]),
    ({"precision": [[]]}, ["precision", "at least one value"]),
])
def test_bad_sweep_refused_in_one_line_and_nothing_written(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], change: dict[str, Any], needles: list[str]) -> None:
    path = write(tmp_path, {**SMALL, **change})
    code, out, err = run_cli(capsys, ["sweep", str(path)])
    assert code == 2, (out, err)
    assert out == ""
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: ")
    for needle in needles:
        assert needle in err, (needle, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep.yaml"]  # no Parquet, no temp file


def test_missing_required_axis(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, {k: v for k, v in SMALL.items() if k != "seq_len"})
    code, _, err = run_cli(capsys, ["sweep", str(path)])
    assert code == 2
    assert "seq_len" in err and "required" in err


@pytest.mark.parametrize("text", ["models: [llama3-8b\nsystems: [dgx-h100]\n", "- a\n- b\n", ""])
def test_malformed_yaml_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str) -> None:
    path = write(tmp_path, text)
    output = tmp_path / "out.parquet"
    code, out, err = run_cli(capsys, ["sweep", str(path), "--output", str(output)])
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and "sweep" in err
    assert not output.exists()


def test_missing_file_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, ["sweep", str(tmp_path / "nope.yaml")])
    assert code == 2 and "cannot read file" in err


@pytest.mark.parametrize(("argv", "needle"), [
    (["--executor", "dask"], "--executor"),
    (["--workers", "0"], "--workers"),
    (["--ray-address", "auto"], "--ray-address"),
    (["--output", "/nonexistent-folder/x.parquet"], "--output"),
])
def test_bad_options_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str],
                             needle: str) -> None:
    path = write(tmp_path, SMALL)
    code, out, err = run_cli(capsys, ["sweep", str(path), *argv])
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and needle in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep.yaml"]


def test_bad_point_refused_before_anything_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Validation covers every point: an unknown model in the last point stops the sweep at load."""
    import clusterplan.sweep as sweep_module

    def must_not_run(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a point ran before the sweep was validated")

    monkeypatch.setattr(sweep_module, "search", must_not_run)
    path = write(tmp_path, {**SMALL, "models": ["llama3-8b", "llama3-8b-typo"]})
    with pytest.raises(SpecError, match=r"models\[1\]"):
        load_sweep(path)


# ---- points and axes -----------------------------------------------------------------------
def test_points_are_the_cartesian_product_in_file_order() -> None:
    sweep = load_sweep(EXAMPLE)
    assert len(sweep.points) == 2 * 2 * 2
    axes = [(p.axes["model"], p.axes["system"], p.axes["chips"]) for p in sweep.points]
    assert axes[:3] == [("llama3-8b", "dgx-h100", 64), ("llama3-8b", "dgx-h100", 128),
                        ("llama3-8b", "trn2-ultraserver", 64)]
    assert [p.index for p in sweep.points] == list(range(8))


def test_option_sets_and_override_axes(tmp_path: Path) -> None:
    data = {**SMALL, "models": ["llama3-8b"], "systems": ["dgx-h100"], "chips": [64],
            "precision": [["bf16"], ["bf16", "fp8"]], "overrides": {"zero": [[1], [3]], "max_tp": [8]}}
    sweep = load_sweep(write(tmp_path, data))
    assert len(sweep.points) == 4
    assert [p.space.precisions for p in sweep.points] == [("bf16",), ("bf16",), ("bf16", "fp8"), ("bf16", "fp8")]
    assert [p.space.zero for p in sweep.points] == [(1,), (3,), (1,), (3,)]
    assert all(p.space.max_tp == 8 for p in sweep.points)
    rows = run_sweep(sweep, LocalExecutor(workers=1))
    assert [r["zero"] for r in rows] == [1, 3, 1, 3]
    assert [r["zero_options"] for r in rows] == ["1", "3", "1", "3"]
    assert all(r["tp"] <= 8 for r in rows)
    assert sweep.varying_axes() == ["precision_options", "zero_options"]
    # a flat list is one option set
    flat = load_sweep(write(tmp_path, {**data, "precision": ["bf16", "fp8"], "overrides": {"zero": [1, 3]}}))
    assert len(flat.points) == 1
    assert flat.points[0].space.precisions == ("bf16", "fp8") and flat.points[0].space.zero == (1, 3)


def test_rows_have_the_best_plan_and_figures(small_rows: list[dict[str, Any]]) -> None:
    assert len(small_rows) == 8
    for index, row in enumerate(small_rows):
        assert row["point"] == index
        assert row["status"] == "ok"
        assert row["plans_fitting"] <= row["plans_enumerated"]
        for name in PLAN_FIELDS:
            assert row[name] is not None
        assert row["tp"] * row["pp"] * row["cp"] * row["dp"] == row["chips"] == row["chips_used"]
        assert 0 < row["mfu"] <= row["hfu"] < 1
        assert row["fits_memory"] is True
        assert row["time_to_train_s"] == pytest.approx(
            row["tokens"] / (row["tokens_per_s_per_chip"] * row["chips"]))


def test_point_with_no_plan_gives_a_null_row(tmp_path: Path) -> None:
    data = {**SMALL, "models": ["llama3-405b"], "systems": ["dgx-h100"], "chips": [8, 1024], "global_batch": [512]}
    rows = run_sweep(load_sweep(write(tmp_path, data)), LocalExecutor(workers=1))
    assert [r["status"] for r in rows] == ["no plan", "ok"]
    assert all(rows[0][k] is None for k in (*PLAN_FIELDS, "step_time_s", "mfu", "time_to_train_s"))
    target = tmp_path / "out.parquet"
    write_parquet(rows, target)
    table = pq.read_table(target)
    assert table.column("step_time_s").to_pylist()[0] is None
    assert str(table.schema.field("step_time_s").type) == "double"


def test_no_plan_point_in_the_summary_table(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli._common, "console", Console(width=200))
    data = {**SMALL, "models": ["llama3-405b"], "systems": ["dgx-h100"], "chips": [8, 1024], "global_batch": [512]}
    code, out, err = run_cli(capsys, ["sweep", str(write(tmp_path, data)), "--workers", "1"])
    assert code == 0, err
    assert "no plan fits" in out and "wrote 2 rows" in out
    assert [r["status"] for r in pq.read_table(tmp_path / "sweep.parquet").to_pylist()] == ["no plan", "ok"]


@pytest.mark.parametrize("width", [80, 140])  # below 120 columns model and system share one
def test_the_summary_table_is_report_sweeps(small_rows: list[dict[str, Any]], tmp_path: Path, width: int,
                                            capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """`sweep` prints report/sweep.py's table of the rows (the CLI only presents them)."""
    from clusterplan.report.sweep import sweep_plan, sweep_table

    monkeypatch.setattr(cli._common, "console", Console(width=width))
    code, out, err = run_cli(capsys, ["sweep", str(EXAMPLE), "--workers", "1", "--output",
                                      str(tmp_path / "s.parquet")])
    assert code == 0, err
    expected = Console(width=width, record=True, file=io.StringIO())
    sweep_table(expected, load_sweep(EXAMPLE).varying_axes(), small_rows)
    table = expected.export_text()
    assert out.startswith(table) and "best plan" in table
    row = small_rows[0]
    assert sweep_plan(row).startswith(f"TP{row['tp']} PP{row['pp']} ")
    assert width < 120 or sweep_plan(row) in table  # at 80 columns the plan wraps
    assert sweep_plan({"status": "no plan"}) == "[red]no plan fits[/]"


def test_rows_come_back_in_point_order_whatever_the_completion_order(small_rows: list[dict[str, Any]]) -> None:
    class Backwards(LocalExecutor):
        def map_unordered(self, fn: Any, tasks: Any) -> Iterator[tuple[int, Any]]:
            for index in reversed(range(len(tasks))):
                yield index, fn(tasks[index])

    seen: list[int] = []
    rows = run_sweep(load_sweep(EXAMPLE), Backwards(1), on_result=lambda i, _row: seen.append(i))
    assert seen == list(range(7, -1, -1))
    assert comparable(rows) == comparable(small_rows)


# ---- executors -----------------------------------------------------------------------------
def test_local_pool_of_two_gives_the_same_rows(small_rows: list[dict[str, Any]]) -> None:
    rows = run_sweep(load_sweep(EXAMPLE), LocalExecutor(workers=2))
    assert comparable(rows) == comparable(small_rows)


def test_make_executor() -> None:
    assert isinstance(make_executor("local", None, 3), LocalExecutor)
    assert make_executor("local", None, None).workers >= 1
    with pytest.raises(SpecError, match="--executor"):
        make_executor("spark")


@pytest.fixture(scope="module")
def ray_local() -> Iterator[Any]:
    """One local Ray instance for the module (start-up takes seconds)."""
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'clusterplan[ray]'; "
                                            "`make test` installs it)")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_executor_gives_the_same_rows_as_local(ray_local: Any, small_rows: list[dict[str, Any]]) -> None:
    executor = RayExecutor()
    with executor:
        rows = run_sweep(load_sweep(EXAMPLE), executor)
    assert comparable(rows) == comparable(small_rows)
    assert ray_local.is_initialized()  # it did not start this instance, so it did not stop it


def test_ray_cli_json(ray_local: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                      small_rows: list[dict[str, Any]]) -> None:
    output = tmp_path / "ray.parquet"
    code, out, err = run_cli(capsys, ["sweep", str(EXAMPLE), "--executor", "ray", "--output", str(output), "--json"])
    assert code == 0, err
    assert comparable(json.loads(out)["plans"]) == comparable(small_rows)
    assert pq.read_table(output).num_rows == 8


# ---- outputs -------------------------------------------------------------------------------
def test_parquet_round_trip_and_default_path(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             small_rows: list[dict[str, Any]]) -> None:
    path = write(tmp_path, SMALL, "grid.yaml")
    code, out, err = run_cli(capsys, ["sweep", str(path), "--workers", "1"])
    assert code == 0, err
    target = tmp_path / "grid.parquet"
    assert "wrote 8 rows" in out and "best plan" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.parquet", "grid.yaml"]
    table = pq.read_table(target)
    assert table.num_rows == 8
    assert table.column_names == list(small_rows[0])
    assert comparable(table.to_pylist()) == comparable(small_rows)


def test_interrupted_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          small_rows: list[dict[str, Any]]) -> None:
    target = tmp_path / "out.parquet"
    target.write_bytes(b"previous result")

    def broken(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(pq, "write_table", broken)
    with pytest.raises(KeyboardInterrupt):
        write_parquet(small_rows, target)
    assert target.read_bytes() == b"previous result"
    assert [p.name for p in tmp_path.iterdir()] == ["out.parquet"]


def test_json_output_is_clean_with_the_progress_bar_on(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       small_rows: list[dict[str, Any]]) -> None:
    """With a terminal forced on, the progress bar draws on stderr and stdout is only JSON."""
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    monkeypatch.setenv("TTY_INTERACTIVE", "1")
    output = tmp_path / "out.parquet"
    code, out, err = run_cli(capsys, ["sweep", str(EXAMPLE), "--output", str(output), "--json", "--workers", "2"])
    assert code == 0, err
    record = json.loads(out)  # nothing but the JSON on stdout: one object
    assert out.lstrip().startswith("{")
    assert record["output"] == str(output) and record["sweep"] == str(EXAMPLE)
    assert comparable(record["plans"]) == comparable(small_rows)
    assert "sweep on local, 2 workers" in err  # the bar was drawn, on stderr
    assert pq.read_table(output).num_rows == 8
