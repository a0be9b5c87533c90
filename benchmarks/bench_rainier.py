"""Benchmark: ``clusterplan rainier`` end to end, as a user runs it (``make demo``).

Runs the command in a fresh process (imports, the plan searches, the serving search, the fleet
ramp, the Markdown and HTML report) ``--repeat`` times and prints the best and the median wall
time, the CPU time of the command and its worker processes, and the peak resident memory of
the largest of them (sampled from /proc: the workers are not the command's waited-for children,
so ``resource.getrusage`` does not see them). Targets
(issue #14): 5 s and 500 MiB. Nothing is asserted: wall time depends on the machine and on what
else runs on it; the CPU time is the steadier figure to compare.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_S = 5.0
TARGET_MIB = 500.0


def _descendants(root: int) -> list[int]:
    """``root`` and every process below it (Linux /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry.name)] = int(fields[1])
    found, frontier = [root], [root]
    while frontier:
        frontier = [pid for pid, parent in parents.items() if parent in frontier]
        found += frontier
    return found


def _sample(pid: int) -> tuple[float, float] | None:
    """(CPU seconds so far, peak resident MiB so far) of one process, or None if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    peak = next((int(line.split()[1]) / 1024.0 for line in status.splitlines() if line.startswith("VmHWM:")), 0.0)
    return cpu, peak


def run_once(report_dir: Path) -> tuple[float, float, float, float]:
    """(wall s, CPU s, peak MiB, the command's own peak MiB from ``resource.getrusage``) of one
    ``clusterplan rainier`` run, worker processes included:
    the process tree is sampled every 20 ms (CPU time and peak RSS are monotonic, so the last
    sample of each process is close to its total)."""
    start = time.perf_counter()
    command = subprocess.Popen([sys.executable, "-c", "from clusterplan.cli import main; main()", "rainier",
                                "--report-dir", str(report_dir)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    seen: dict[int, tuple[float, float]] = {}
    while command.poll() is None:
        for pid in _descendants(command.pid):
            sample = _sample(pid)
            if sample is not None:  # keep the largest (a process that has exited shows no memory)
                cpu, peak = seen.get(pid, (0.0, 0.0))
                seen[pid] = (max(cpu, sample[0]), max(peak, sample[1]))
        time.sleep(0.02)
    wall = time.perf_counter() - start
    if command.returncode:
        raise SystemExit(f"clusterplan rainier failed with exit code {command.returncode}")
    own = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0  # Linux: KiB; the largest child so far
    return wall, sum(cpu for cpu, _ in seen.values()), max((peak for _, peak in seen.values()), default=0.0), own


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs (default 3)")
    args = parser.parse_args()
    walls, cpus, peak, own = [], [], 0.0, 0.0
    with tempfile.TemporaryDirectory() as directory:
        for _ in range(args.repeat):
            wall, cpu, mib, command = run_once(Path(directory))
            walls.append(wall)
            cpus.append(cpu)
            peak, own = max(peak, mib), max(own, command)
    print(f"clusterplan rainier: wall best {min(walls):.2f} s, median {statistics.median(walls):.2f} s "
          f"(target {TARGET_S:.0f} s); CPU {statistics.median(cpus):.2f} s (command and workers); "
          f"peak RSS {peak:,.0f} MiB, largest process (target {TARGET_MIB:.0f} MiB; the command's own: "
          f"{own:,.0f} MiB by getrusage); {args.repeat} runs")
    print(f"  within targets: wall {'yes' if min(walls) <= TARGET_S else 'NO'}, "
          f"memory {'yes' if peak <= TARGET_MIB else 'NO'}")


if __name__ == "__main__":
    main()
