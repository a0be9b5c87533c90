"""Issue #14 (parts 2 and 8): exit codes, refusals and robustness, as fuzzing found them.

Bad input: one ``error:`` line naming the field, the value and the rule, exit code 2, no
traceback, bounded time, nothing written (the table in test_cli.py's BAD_INPUT). A valid question
answered no (the plan does not fit, no deployment meets the SLO): the reason, exit code 1.
Ctrl-C: ``error: aborted``, exit code 130, no worker tracebacks. Then a hypothesis fuzz of the
command-line argument paths: whatever the arguments, exit code 0, 1 or 2, never a traceback.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from cliutil import run_cli
from clusterplan import cli
from clusterplan.errors import NoAnswerError, SpecError, shorten
from test_cli import CAPACITY_8B, RELIABILITY_8B, SEARCH_8B, SERVE_8B, assert_refused, strict_json

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_SWEEP = REPO / "examples" / "sweep-small.yaml"
CLUSTERPLAN = [sys.executable, "-c", "import sys; from clusterplan.cli import main; main(sys.argv[1:])"]
TOO_BIG_70B = ["train", "--model", "llama3-70b", "--system", "dgx-h100", "--chips", "8", "--seq", "8192",
               "--global-batch", "64"]


# ---- the one mapping from exceptions to exit codes -----------------------------------------------
def test_exit_codes_come_from_one_place() -> None:
    assert cli.one_line(SpecError("--tp", 3, "must divide 32")) == (2, "--tp=3: must divide 32")
    assert cli.one_line(NoAnswerError("--chips", 8, "does not fit")) == (1, "--chips=8: does not fit")
    assert cli.one_line(RuntimeError("a bug")) is None  # a bug keeps its traceback


def test_values_are_shortened_in_refusals() -> None:
    message = str(SpecError("--model", "x" * 100_000, "unknown model"))
    assert len(message) < 300 and "100,002 characters" in message
    assert "\n" not in shorten("a\nb")


def test_a_huge_option_value_is_not_echoed_whole(capsys: pytest.CaptureFixture[str]) -> None:
    line = assert_refused(*run_cli(capsys, [*SEARCH_8B, "--tp", "9" * 50_000]), "--tp")
    assert len(line) < 1000


# ---- a valid question answered no: exit code 1 ----------------------------------------------------
@pytest.mark.parametrize(("option", "value"), [("--model", "~no-such-user-zz/m.yaml"), ("--system", "~0")])
def test_a_home_directory_that_does_not_exist_is_one_line(capsys: pytest.CaptureFixture[str], option: str,
                                                          value: str) -> None:
    """``~user`` paths of unknown users (Path.expanduser raises RuntimeError) are refused, not a
    traceback (found by test_fuzzed_command_lines_end_cleanly on a machine without HOME)."""
    argv = ["train", "--model", "llama3-8b", "--system", "dgx-h100", "--chips", "8", "--seq", "2048",
            "--global-batch", "8"]
    argv[argv.index(option) + 1] = value
    assert_refused(*run_cli(capsys, argv), option, value, "home directory")


def test_a_plan_that_does_not_fit_prints_its_memory_and_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, TOO_BIG_70B)
    assert code == 1
    assert "does NOT fit" in out and "gradients" in out and "HBM of the chip" in out
    assert "MFU" not in out and "step time" not in out  # no figures of a plan that cannot run
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --chips=8: does not fit in memory")
    assert "h100-sxm" in lines[0] and "GiB" in lines[0]


def test_a_plan_that_does_not_fit_still_prints_its_json_record(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, [*TOO_BIG_70B, "--json"])
    assert code == 1
    record = strict_json(out)
    assert record["fits_memory"] is False
    assert record["memory_bytes_per_chip"] > record["memory_capacity_bytes"]
    assert err.startswith("error: --chips=8: does not fit in memory") and len(err.splitlines()) == 1


def test_the_failures_of_a_job_that_does_not_fit_are_not_answered(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["reliability", *TOO_BIG_70B[1:], "--tokens", "1T"]
    code, out, err = run_cli(capsys, args)
    assert code == 1 and "HBM of the chip" in out and "goodput" not in out
    assert len(err.splitlines()) == 1 and err.startswith("error: --chips=8: does not fit in memory")
    code, out, _ = run_cli(capsys, [*args, "--json"])
    assert code == 1 and strict_json(out)["fits_memory"] is False


def test_an_slo_no_deployment_meets_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, [*CAPACITY_8B, "--slo-ttft", "1", "--input-tokens", "4000", "--json"])
    assert code == 1 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith("error: --slo-ttft") and "closest" in err


def test_capacity_defaults_to_the_formats_the_chip_has(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, [*CAPACITY_8B, "--system", "tpu-v4", "--json"])
    assert code == 0, err
    record = strict_json(out)
    assert {c["deployment"]["weights"] for c in record["ranked"]} == {"bf16"}  # tpu-v4 has no fp8 units


# ---- checks before work ----------------------------------------------------------------------------
def test_calibrate_refuses_a_bad_output_before_fitting(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import clusterplan.validation.calibrate as calibration

    def no_fit(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the fit ran before the output was checked")

    monkeypatch.setattr(calibration, "calibrate", no_fit)
    crossval = ["--crossval-output", str(tmp_path / "crossval.yaml")]
    assert_refused(*run_cli(capsys, ["calibrate", "--output", str(tmp_path), *crossval]), "--output", "folder")
    assert_refused(*run_cli(capsys, ["calibrate", "--output", str(tmp_path / "no" / "such.yaml"), *crossval]),
                   "--output", "folder does not exist")
    assert_refused(*run_cli(capsys, ["calibrate", "--output", str(tmp_path / "e.yaml"), "--crossval-output",
                                     str(tmp_path)]), "--crossval-output", "folder")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc (a folder no file can be created in)")
def test_report_dir_where_nothing_can_be_written(capsys: pytest.CaptureFixture[str]) -> None:
    started = time.perf_counter()
    assert_refused(*run_cli(capsys, ["rainier", "--report-dir", "/proc/clusterplan-report"]), "--report-dir")
    assert time.perf_counter() - started < 10  # before the 15-25 s of searches


def test_a_sweep_replaces_its_output_atomically(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    target = tmp_path / "rows.parquet"
    target.write_bytes(b"old")
    code, _, err = run_cli(capsys, ["sweep", str(EXAMPLE_SWEEP), "--output", str(target), "--workers", "1",
                                    "--json"])
    assert code == 0, err
    assert target.read_bytes()[:4] == b"PAR1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.parquet"]  # no temporary file left


def test_max_points_can_be_raised(tmp_path: Path) -> None:
    from clusterplan.sweep import load_sweep

    with pytest.raises(SpecError, match="8 points"):
        load_sweep(EXAMPLE_SWEEP, max_points=7)
    assert len(load_sweep(EXAMPLE_SWEEP, max_points=8).points) == 8


def test_ray_missing_is_one_line(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    assert_refused(*run_cli(capsys, ["sweep", str(EXAMPLE_SWEEP), "--executor", "ray"]),
                   "--executor", "Ray is not installed")


@pytest.fixture
def silent_listener() -> Iterator[int]:
    """A TCP port that accepts connections and never answers (not a Ray head node)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    server.settimeout(0.2)
    stop = threading.Event()
    accepted: list[socket.socket] = []

    def serve() -> None:
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for connection in accepted:
        connection.close()
    server.close()


def test_a_ray_address_that_never_answers_is_bounded(silent_listener: int, tmp_path: Path) -> None:
    pytest.importorskip("ray")
    script = ("import sys, clusterplan.distributed as d; d.RAY_INIT_TIMEOUT_S = 5.0; "
              "from clusterplan.cli import main; main(sys.argv[1:])")
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", script, "sweep", str(EXAMPLE_SWEEP), "--output",
                           str(tmp_path / "rows.parquet"), "--executor", "ray", "--ray-address",
                           f"127.0.0.1:{silent_listener}"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error: --ray-address=") and "did not answer within 5 s" in lines[-1]
    assert "Traceback" not in done.stderr
    assert time.perf_counter() - started < 90
    assert list(tmp_path.iterdir()) == []


# ---- Ctrl-C ------------------------------------------------------------------------------------------
def test_ctrl_c_is_one_line_and_exit_130(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(*_args: object, **_kwargs: object) -> None:
        raise KeyboardInterrupt

    from clusterplan.api import search

    monkeypatch.setattr(search, "load_model", interrupted)  # the search's planning lives in api/search.py
    previous = signal.getsignal(signal.SIGINT)
    try:
        code, out, err = run_cli(capsys, [*SEARCH_8B, "--json"])
    finally:
        signal.signal(signal.SIGINT, previous)  # main ignores a second Ctrl-C while it leaves
    assert (code, out, err) == (130, "", "error: aborted\n")


#: The console script ``clusterplan`` (pyproject.toml [project.scripts]), run with an import hook
#: that raises KeyboardInterrupt when the module named by argv[1] is first imported (argv[2]: the
#: script's module:function, the rest its arguments): Ctrl-C at
#: that instant of start-up, without timing.
INTERRUPTED_IMPORT = """
import importlib, sys
interrupted, script = sys.argv[1:3]
sys.argv = ["clusterplan", *sys.argv[3:]]
class Interrupt:
    def find_spec(self, name, path=None, target=None):
        if name == interrupted:
            raise KeyboardInterrupt
        return None
module, _, function = script.partition(":")
entry = importlib.import_module(module)
sys.meta_path.insert(0, Interrupt())
getattr(entry, function)()
"""


def _console_script() -> str:
    import tomllib

    with open(Path(__file__).parents[1] / "pyproject.toml", "rb") as stream:
        return str(tomllib.load(stream)["project"]["scripts"]["clusterplan"])


def test_the_installed_console_script_is_the_projects() -> None:
    from importlib.metadata import entry_points

    (script,) = tuple(entry_points(group="console_scripts", name="clusterplan"))
    assert script.value == _console_script()  # else: pip install -e . again (make does, pyproject changed)


@pytest.mark.parametrize("module", ["typer", "pydantic", "numpy", "rich.console", "clusterplan.cli._common",
                                    "clusterplan.cli.train"])
def test_ctrl_c_while_the_cli_is_still_importing(module: str) -> None:
    """Ctrl-C during the CLI's imports (its first second or two): ``error: aborted``, exit code
    130, no traceback, as once the command runs."""
    entry = _console_script()
    done = subprocess.run([sys.executable, "-c", INTERRUPTED_IMPORT, module, entry], capture_output=True,
                          text=True, timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (130, "", "error: aborted\n")


def test_the_console_script_runs_the_cli() -> None:
    done = subprocess.run([sys.executable, "-c", INTERRUPTED_IMPORT, "no.such.module", _console_script()],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("Usage: ") and done.stderr == ""


def _descendants(pid: int) -> list[int]:
    """Child processes of ``pid``, recursively (Linux /proc)."""
    found: list[int] = []
    for child in _children(pid):
        found += [child, *_descendants(child)]
    return found


def _children(pid: int) -> list[int]:
    """The direct child processes of ``pid`` (Linux /proc; none once it has gone)."""
    try:
        return [int(child) for task in Path(f"/proc/{pid}/task").iterdir()
                for child in (task / "children").read_text().split()]
    except FileNotFoundError:
        return []


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (0 once it has gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.skipif(not Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").exists(),
                    reason="needs Linux /proc/<pid>/task/<tid>/children")
def test_ctrl_c_during_a_process_pool_sweep(tmp_path: Path) -> None:
    """Ctrl-C reaches the whole process group (parent and pool workers): one line, exit 130, no
    worker tracebacks, no process left behind, nothing written."""
    sweep = tmp_path / "sweep.yaml"
    # 1,152 points, about half a minute of a two-worker pool on an idle machine. The signal comes
    # once each worker has used 0.3 s of CPU: however loaded the machine, the pool is searching
    # and far from done when it arrives (a wall-clock wait could see a starved test outlived).
    sweep.write_text(yaml.safe_dump({"models": ["llama3-8b", "llama3-70b", "llama3-405b"],
                                     "systems": ["dgx-h100", "trn2-ultraserver"],
                                     "chips": [64 * 2**k for k in range(12)], "seq_len": [4096, 8192],
                                     "global_batch": [256, 512, 1024, 2048, 4096, 8192, 16384, 32768]}),
                     encoding="utf-8")
    process = subprocess.Popen([*CLUSTERPLAN, "sweep", str(sweep), "--workers", "2"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        workers: list[int] = []
        while time.monotonic() < deadline and process.poll() is None:
            # the pool's workers are forked by the forkserver, a child of the CLI (as is the
            # resource tracker): grandchildren
            workers = [worker for child in _children(process.pid) for worker in _children(child)]
            if len(workers) >= 2 and all(_cpu_seconds(worker) >= 0.3 for worker in workers):
                break
            time.sleep(0.05)
        assert process.poll() is None, process.communicate()
        assert len(workers) >= 2, workers
        workers = _descendants(process.pid)
        os.killpg(process.pid, signal.SIGINT)
        raw_out, raw_err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    # A pipe may cut a table mid-character: decode leniently, the assertions are on plain text.
    out, err = raw_out.decode("utf-8", "replace"), raw_err.decode("utf-8", "replace")
    assert process.returncode == 130, err
    assert [line for line in err.splitlines() if line.strip()] == ["error: aborted"]
    assert "Traceback" not in out + err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep.yaml"]
    time.sleep(1.0)
    assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()
                and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()]


# ---- fuzz: any arguments end in exit code 0, 1 or 2, without a traceback, in bounded time ---------
WEIRD = st.sampled_from(["nan", "inf", "-inf", "1e400", "", " ", "0", "-1", "-0", "1e30", "1e-300", "2.5", "true",
                         "0x10", "1_000", "99999999999999999999", ",", "fp8", "fp4", "bf16,fp8", "15T", "1e9y",
                         "0TB/s", "/dev/zero", "/dev/null", "x" * 500, "é", "\udcff", "auto", "ray://h:1"])
SMALL = st.sampled_from(["1", "2", "4", "8", "16", "64", "100", "2048", "0.5", "1T", "2s", "100ms"])
VALUES = st.one_of(SMALL, WEIRD, st.integers(-(10**15), 10**15).map(str),
                   st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=30))

COMMANDS = {
    "train": (["train", *SEARCH_8B[1:]],
              ["--chips", "--seq", "--global-batch", "--tp", "--pp", "--vp", "--cp", "--dp", "--ep", "--micro-batch",
               "--zero", "--precision", "--recompute", "--tokens", "--routing-gini", "--capacity-factor", "--mtp",
               "--loss-chunks", "--offload-layers", "--dp-shard", "--first-stage-layers", "--grad-reduce", "--model",
               "--system", "--chip", "--plan", "--recompute-modules"]),
    "search": (SEARCH_8B, ["--chips", "--seq", "--global-batch", "--precision", "--recompute", "--zero", "--objective",
                           "--max-memory-fraction", "--top", "--max-tp", "--max-cp", "--max-micro-batch", "--tokens",
                           "--loss-chunks", "--model", "--chip"]),
    "reliability": ([*RELIABILITY_8B, "--tokens", "1T"],
                    ["--tokens", "--duration", "--checkpoint-interval", "--restart", "--detection", "--failure-scale",
                     "--storage-bandwidth", "--trials", "--seed", "--chips", "--checkpoint", "--recovery",
                     "--precision"]),
    "serve": (SERVE_8B, ["--tp", "--pp", "--chips-per-replica", "--ep", "--weights", "--kv-cache", "--max-batch",
                         "--kv-memory-fraction", "--prefill-buckets", "--input-tokens", "--output-tokens", "--rate",
                         "--batch", "--slo-ttft", "--slo-tpot", "--demand", "--requests", "--length-spread",
                         "--replicas", "--scheduler", "--system", "--trace", "--deployment"]),
    "capacity": (CAPACITY_8B, ["--demand", "--slo-ttft", "--slo-tpot", "--input-tokens", "--output-tokens",
                               "--objective", "--weights", "--kv-cache", "--max-chips-per-replica", "--max-batch",
                               "--top", "--requests", "--length-spread", "--system"]),
    "sweep": (["sweep", str(EXAMPLE_SWEEP), "--workers", "1", "--output", "/nonexistent-folder/rows.parquet"],
              ["--executor", "--ray-address", "--workers", "--max-points"]),
    "catalog": (["catalog", "chips"], []),
}


@st.composite
def command_lines(draw: st.DrawFn) -> list[str]:
    """A command's base arguments with one to three options replaced or added, values drawn
    from numbers, units, paths and junk."""
    base, options = COMMANDS[draw(st.sampled_from(sorted(COMMANDS)))]
    argv = list(base)
    for _ in range(draw(st.integers(0, 3))):
        option = draw(st.sampled_from(options or ["--json"]))
        value = draw(VALUES)
        if option in argv and option != argv[0]:
            argv[argv.index(option) + 1] = value
        else:
            argv += [option, value]
    if draw(st.booleans()):
        argv.append("--json")
    return argv


#: derandomize: the same 60 command lines in every run (CI included), so a slow or failing draw
#: shows up on the machine that made the change, not as a random stall of a later clean run (a
#: fresh-clone run of round 8 stalled in this test on a draw that 2,100 further draws did not
#: reproduce).
@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(argv=command_lines())
def test_fuzzed_command_lines_end_cleanly(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    started = time.perf_counter()
    try:
        code, out, err = run_cli(capsys, argv)
    except Exception as error:  # escaping main() at all breaks the contract
        pytest.fail(f"{argv}: uncaught {type(error).__name__}: {error}")
    elapsed = time.perf_counter() - started
    event(f"exit {code}")
    assert code in (0, 1, 2), (argv, code, err)
    assert "Traceback" not in out + err, argv
    assert elapsed < 60, (argv, elapsed)
    if code:
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), (argv, err)
        assert len(lines[0]) < 1200, argv
    if code == 2:
        assert out == "", argv


def test_a_plan_that_fits_with_a_setting_left_open_names_it(capsys: pytest.CaptureFixture[str]) -> None:
    """Nemotron-4 340B on 128 H100 (NeMo 24.07's layout) with recompute given as none: 83.6 GiB
    of 79.6; ZeRO-2, left open, fits, and the one-line refusal says so with its cost."""
    argv = ["train", "--model", "nemotron-4-340b", "--system", "dgx-h100", "--chips", "128", "--tp", "8",
            "--pp", "8", "--vp", "12", "--seq", "4096", "--global-batch", "32", "--precision", "fp8",
            "--recompute", "none"]
    code, _, err = run_cli(capsys, argv)
    assert code == 1 and len(err.splitlines()) == 1
    assert "left open, `--zero 2` fits (step +" in err
    # Given on the command line, it is not offered again: the general remedies remain.
    code, _, err = run_cli(capsys, [*argv, "--zero", "1"])
    assert code == 1 and "`--zero 2`" not in err and "try more chips" in err


def test_recompute_left_open_is_chosen_rather_than_refused(capsys: pytest.CaptureFixture[str]) -> None:
    """Llama 3.1 405B with FSDP over 64 GB200 pairs (TP2): 219 GiB of activations at the default
    recompute; left open, the recompute that fits is chosen (training/recompute.py) and the
    plan is answered; given, it is kept and the plan refused."""
    argv = ["train", "--model", "llama3-405b", "--system", "gb200-nvl72", "--chips", "128", "--tp", "2",
            "--zero", "3", "--seq", "8192", "--global-batch", "64", "--precision", "fp8"]
    code, out, _ = run_cli(capsys, [*argv, "--json"])
    record = strict_json(out)
    assert code == 0 and record["fits_memory"] and record["recompute_chosen"]["chosen"] == "automatically"
    code, _, err = run_cli(capsys, [*argv, "--recompute", "selective", "--no-flash-attention"])
    assert code == 1 and "`--recompute full`" not in err and "try more chips" in err


def test_a_plan_no_open_setting_rescues_gets_the_general_remedies(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, TOO_BIG_70B)
    assert code == 1 and "left open" not in err and "try more chips" in err
