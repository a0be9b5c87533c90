"""Benchmark: clusterplan's plan search side by side with Calculon's, same case, same machine, same run.

Usage::

    python benchmarks/bench_calculon.py --calculon /path/to/calculon [--calculon-python PY]
                                        [--workers 1] [--timeout 600] [--no-mbs-break] [--skip-no-offload]

Calculon (github.com/calculon-ai/calculon, Apache-2.0) is never vendored: pass the path of a checkout kept
outside this project. It runs in a subprocess with its own interpreter (``--calculon-python``; default the
venv at ``<calculon>/../calculon-venv`` if there is one, else this interpreter), from a temporary directory
that also receives its output file. Without ``--calculon`` (or with a path that does not exist) the script
prints how to run it and exits 0, so ``make bench`` may call it unconditionally.

The case (issue 3, item 5; the example in Calculon's README): Turing-530B / MT-NLG (105 layers, hidden
20,480, 128 heads, seq 2,048; vocab 51,200) on 5,128 A100-80GB, global batch 2,520.

* Calculon: ``calculon llm-optimal-execution models/turing-530B.json 5128 2520 float16
  systems/a100_80g.json OUT.json -m -c WORKERS`` -- its own model and system files, exactly as its README
  runs this case (``-m``: its micro-batch early break, ``--no-mbs-break`` drops it). ``-c 1`` gives its
  process pool one worker, so evaluation is single-core like clusterplan's. Plans evaluated = its "Total
  executions"; its search time = total executions / its own "Calculation rate" (the wall time of its pool,
  which excludes interpreter start-up and file reading); the process wall time is shown too. float16 because
  its A100 system file defines only that type (same 312 TFLOPS as bf16 on A100). A second Calculon row
  (skip with ``--skip-no-offload``) runs the same search on a copy of its system file, written into the
  temporary directory, whose second memory tier (512 GiB of host memory for offload) is set to 0 GiB: the
  memory model clusterplan has.
* clusterplan: ``search(load_model("korthikanti-530b"), hardware_for(load_system("dgx-a100")), 5128, seq
  2048, batch 2520, SearchSpace(...))`` in this process, bf16 only (A100 has no FP8), default settings
  otherwise; run with ``chips_at_most=False`` (exactly 5,128 chips), ``chips_at_most=True`` (any count up to
  5,128), and ``chips_at_most=True`` without fused (flash) attention, which is Calculon's attention model
  (it stores or recomputes the attention scores; 2022 Megatron). Each is timed best of 3; plans/s =
  plans_enumerated / search_time_s and plans_timed / search_time_s
  (``search_time_s`` is measured by ``search`` with ``time.perf_counter``: enumeration, memory pruning,
  dominance pruning, timing and ranking). BLAS/OpenMP threads are set to 1 before NumPy loads (single core).

What differs between the two plan spaces (so the counts are not the same set of plans):

* Calculon keeps the processor count exact and shrinks the batch to the largest multiple of DP that is
  <= 2,520; it needs the layer count divisible by PP and 5,128 by TP x PP. As 5,128 = 8 x 641 (641 prime)
  and 105 = 3 x 5 x 7, its only layouts are PP = 1 with TP = 4 (DP 1,282, batch 1,282) or TP = 8 (DP 641,
  batch 1,923). It crosses them with interleaving, micro-batch, recompute (full/attn_only/none), optimizer
  sharding, TP communication type and overlap, DP overlap, sequence-parallel all-gather redo, weight /
  activation / optimizer offload to host memory, and the network each parallel dimension runs on. Its
  step-time and memory model covers the transformer blocks only (no embedding, LM head or logits), and it
  has no flash attention and no context parallelism.
* clusterplan keeps the global batch at exactly 2,520 (DP must divide it), so on exactly 5,128 chips it has
  no valid layout at all (DP would need the factor 641); with ``chips_at_most`` it may leave chips idle
  (e.g. 5,040). It searches TP x CP x PP (uneven first/last stages allowed) x VP x DP x micro-batch x
  recompute (none/selective/full) x ZeRO 0-3, with sequence parallelism on and overlap settings fixed; it
  does not model host offload. It prunes exactly (memory, then recompute dominance) and times only the
  survivors, all as NumPy columns.
* Step times are each tool's own prediction for its own best plan. Because Calculon's batch may differ from
  2,520, the table also gives samples/s and the time per 2,520 samples.
* Cross-check: each clusterplan best plan that Calculon can express (CP 1, even stages, no flash attention) is
  written as a Calculon execution file and evaluated by ``calculon llm`` on the no-offload system, so the
  two best plans can also be compared under one model (Calculon's). Mapping: selective recompute = its
  ``attn_only``, ZeRO >= 1 = its optimizer sharding (ZeRO-2 is approximated by it), SP = its ``rs_ag``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHIPS = 5128
GLOBAL_BATCH = 2520
SEQ = 2048
REPEATS = 3
CALCULON_MODEL = "models/turing-530B.json"
CALCULON_SYSTEM = "systems/a100_80g.json"
USAGE = ("bench_calculon: skipped (needs a Calculon checkout outside the project): "
         "python benchmarks/bench_calculon.py --calculon /path/to/calculon (or make bench CALCULON=/path/to/calculon)")


@dataclass
class Row:
    tool: str
    plans: int | None  # plans evaluated (Calculon) / enumerated (clusterplan)
    timed: int | None  # plans whose step time was computed (Calculon: not reported separately; it times a
    # plan before checking its memory, so its "plans" are, but for early compile errors, all timed)
    search_s: float | None
    wall_s: float | None
    best: str
    step_s: float | None
    batch: int | None
    note: str = ""
    plan: dict[str, Any] | None = None  # clusterplan's best plan (for the cross-check)
    chips: int | None = None

    @property
    def rate(self) -> float | None:
        return self.plans / self.search_s if self.plans and self.search_s else None

    @property
    def timed_rate(self) -> float | None:
        return self.timed / self.search_s if self.timed and self.search_s else None

    @property
    def samples_per_s(self) -> float | None:
        return self.batch / self.step_s if self.batch and self.step_s else None


# --------------------------------------------------------------------------------------------- Calculon


def _default_python(calculon: Path) -> str:
    venv = calculon.resolve().parent / "calculon-venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def _commit(calculon: Path) -> str:
    try:
        out = subprocess.run(["git", "-C", str(calculon), "rev-parse", "HEAD"], capture_output=True, text=True,
                             check=True, timeout=30)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"


def _log_value(log: str, label: str) -> float | None:
    match = re.search(rf"{label}:\s*([0-9.eE+-]+)", log)
    return float(match.group(1)) if match else None


def _run(calculon: Path, command: list[str], timeout: float, workdir: Path) -> tuple[str, int | None, float]:
    """Run a Calculon command; (log, exit status or None on timeout, wall seconds)."""
    env = dict(os.environ, PYTHONPATH=str(calculon))
    start = time.perf_counter()
    # Own session, so a timeout can stop its worker processes too (only the processes started here).
    process = subprocess.Popen(command, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True)
    try:
        log, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        return "", None, time.perf_counter() - start
    return log, process.returncode, time.perf_counter() - start


def run_calculon(calculon: Path, python: str, workers: int, timeout: float, workdir: Path, system: Path,
                 tool: str, mbs_break: bool) -> Row:
    """Run Calculon's optimal-execution search in a subprocess and parse its log and output file."""
    output = workdir / f"{tool.replace(' ', '_').replace('(', '').replace(')', '')}.json"
    command = [python, str(calculon / "bin" / "calculon"), "llm-optimal-execution",
               str(calculon / CALCULON_MODEL), str(CHIPS), str(GLOBAL_BATCH), "float16", str(system),
               str(output), "-c", str(workers), "-n"]
    if mbs_break:
        command.append("-m")
    log, returncode, wall = _run(calculon, command, timeout, workdir)
    if returncode is None:
        return Row(tool, None, None, None, wall, "-", None, None, note=f"stopped after --timeout {timeout:.0f} s")
    if returncode != 0:
        tail = " | ".join(log.strip().splitlines()[-3:])
        return Row(tool, None, None, None, wall, "-", None, None, note=f"exit {returncode}: {tail}")
    total = _log_value(log, "Total executions")
    good = _log_value(log, "Good executions")
    rate = _log_value(log, "Calculation rate")
    plans = int(total) if total is not None else None
    search_s = plans / rate if plans is not None and rate else None
    found = json.loads(output.read_text()) if output.exists() else {}
    if "0" not in found:  # -n: no plan fits, Calculon writes an empty object
        return Row(tool, plans, None, search_s, wall, "no plan fits memory", None, None,
                   note=f"{int(good or 0):,} of {plans:,} fit")
    best = found["0"]
    exe, stats = best["execution"], best["stats"]
    recompute = exe["activation_recompute"]
    offload = [k.split("_")[0] for k in ("weight_offload", "activations_offload", "optimizer_offload") if exe[k]]
    text = (f"TP{exe['tensor_par']} PP{exe['pipeline_par']} DP{exe['data_par']} "
            f"int{exe['pipeline_interleaving']} mb{exe['microbatch_size']} rec={recompute} "
            f"optshard={'y' if exe['optimizer_sharding'] else 'n'} offload={'+'.join(offload) or 'none'}")
    return Row(tool, plans, None, search_s, wall, text, float(stats["total_time"]), int(exe["batch_size"]),
               note=f"{int(good or 0):,} of {plans:,} fit; {workers} worker(s)")


def no_offload_system(calculon: Path, workdir: Path) -> Path:
    """A copy of Calculon's A100 system file, in ``workdir``, with no host-memory tier (as in clusterplan)."""
    config = json.loads((calculon / CALCULON_SYSTEM).read_text())
    config["mem2"]["GiB"] = 0
    path = workdir / "a100_80g_no_offload.json"
    path.write_text(json.dumps(config))
    return path


def calculon_rows(calculon: Path, python: str, workers: int, timeout: float, mbs_break: bool,
                  no_offload: bool, workdir: Path) -> list[Row]:
    rows = [run_calculon(calculon, python, workers, timeout, workdir, calculon / CALCULON_SYSTEM, "calculon",
                         mbs_break)]
    if no_offload:
        rows.append(run_calculon(calculon, python, workers, timeout, workdir, no_offload_system(calculon, workdir),
                                 "calculon (no offload)", mbs_break))
    return rows


def calculon_evaluates(calculon: Path, python: str, timeout: float, workdir: Path, plan: dict[str, Any],
                       chips: int) -> str:
    """Calculon's own prediction (``calculon llm``) for a clusterplan plan, on its system without offload.

    Only plans Calculon can express: CP 1, even layer split, no flash attention (Calculon does not model it).
    Mapping: selective recompute = its ``attn_only``; ZeRO >= 1 = its optimizer sharding; SP = its ``rs_ag``
    TP communication; TP on its NVLink network, PP and DP on its InfiniBand network; overlaps as in the plan.
    """
    if plan["cp"] != 1 or plan.get("first_stage_layers") or plan["flash_attention"]:
        return "not expressible in Calculon (it models no flash attention, CP or uneven stages)"
    recompute = {"none": "none", "selective": "attn_only", "full": "full"}[plan["recompute"]]
    execution = {
        "num_procs": chips, "tensor_par": plan["tp"], "pipeline_par": plan["pp"], "data_par": plan["dp"],
        "tensor_par_net": 0, "pipeline_par_net": 1 if plan["pp"] > 1 else 0, "data_par_net": 1 if plan["dp"] > 1 else 0,
        "batch_size": plan["global_batch"], "microbatch_size": plan["micro_batch"], "datatype": "float16",
        "fused_activation": True, "attention_type": "multihead", "activation_recompute": recompute,
        "pipeline_interleaving": plan["vp"], "optimizer_sharding": plan["zero"] >= 1,
        "tensor_par_comm_type": "rs_ag" if plan["sp"] else "ar",
        "tensor_par_overlap": "ring" if plan["overlap_tp"] else "none", "seq_par_ag_redo": False,
        "data_par_overlap": bool(plan["overlap_dp"]), "weight_offload": False, "activations_offload": False,
        "optimizer_offload": False, "training": True}
    exe_path, out_path = workdir / "clusterplan_plan.json", workdir / "clusterplan_plan_stats.json"
    exe_path.write_text(json.dumps(execution))
    command = [python, str(calculon / "bin" / "calculon"), "llm", str(calculon / CALCULON_MODEL), str(exe_path),
               str(no_offload_system(calculon, workdir)), str(out_path)]
    log, returncode, _ = _run(calculon, command, timeout, workdir)
    if returncode != 0 or not out_path.exists():
        return "Calculon rejects it: " + (" | ".join(log.strip().splitlines()[-2:]) or "timeout")
    stats = json.loads(out_path.read_text())
    return (f"step {stats['total_time']:.2f} s for {plan['global_batch']:,} samples "
            f"({stats['sample_rate']:.1f} samples/s), {stats['proc_mem_tier1_cap_req'] / 2**30:.1f} GiB per GPU")


# ------------------------------------------------------------------------------------------- clusterplan


VARIANTS = (  # (label, chips_at_most, flash_attention)
    ("clusterplan (= 5,128)", False, True),
    ("clusterplan (<= 5,128)", True, True),
    ("clusterplan (<= 5,128, no flash)", True, False),
)


def clusterplan_rows() -> list[Row]:
    from clusterplan.catalog import hardware_for, load_model, load_system
    from clusterplan.training.search import SearchSpace, search

    model = load_model("korthikanti-530b")
    hardware = hardware_for(load_system("dgx-a100"))
    rows = []
    for tool, at_most, flash in VARIANTS:
        space = SearchSpace(precisions=("bf16",), chips_at_most=at_most,
                            settings={**SearchSpace().settings, "flash_attention": flash})
        results, walls = [], []
        for _ in range(REPEATS):
            start = time.perf_counter()
            results.append(search(model, hardware, CHIPS, SEQ, GLOBAL_BATCH, space, top=1))
            walls.append(time.perf_counter() - start)
        result = min(results, key=lambda r: r.search_time_s)
        if not result.best:
            rows.append(Row(tool, result.plans_enumerated, result.plans_timed, result.search_time_s, min(walls),
                            "no valid plan", None, None, note="DP must divide 2,520, and 5,128 = 8 x 641"))
            continue
        record = result.best[0]
        plan = record["plan"]
        text = (f"TP{plan['tp']} PP{plan['pp']} VP{plan['vp']} CP{plan['cp']} DP{plan['dp']} "
                f"mb{plan['micro_batch']} rec={plan['recompute']} ZeRO{plan['zero']}")
        rows.append(Row(tool, result.plans_enumerated, result.plans_timed, result.search_time_s, min(walls), text,
                        float(record["step_time_s"]), int(plan["global_batch"]),
                        note=f"{result.plans_fitting:,} fit, {result.plans_timed:,} timed; "
                             f"{record['chips']:,} chips used", plan=plan, chips=int(record["chips"])))
    return rows


# ------------------------------------------------------------------------------------------------ output


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _print(header: list[str], table: list[list[str]], left: tuple[int, ...]) -> None:
    widths = [max(len(x) for x in column) for column in zip(header, *table, strict=True)]

    def fmt(cells: list[str]) -> str:
        padded = (c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True)))
        return "  ".join(padded).rstrip()

    print(fmt(header))
    print("  ".join("-" * w for w in widths))
    for cells in table:
        print(fmt(cells))


def print_table(rows: list[Row]) -> None:
    _print(["tool", "plans evaluated", "search s", "wall s", "plans/s", "timed plans/s"],
           [[r.tool, _fmt(r.plans, ","), _fmt(r.search_s, ".3f"), _fmt(r.wall_s, ".2f"), _fmt(r.rate, ",.0f"),
             _fmt(r.timed_rate, ",.0f")] for r in rows], left=(0,))
    print()
    _print(["tool", "best plan", "batch", "step s", "samples/s", "s per 2,520"],
           [[r.tool, r.best, _fmt(r.batch, ","), _fmt(r.step_s, ".2f"), _fmt(r.samples_per_s, ".1f"),
             _fmt(GLOBAL_BATCH / r.samples_per_s if r.samples_per_s else None, ".2f")] for r in rows], left=(0, 1))
    print()
    for r in rows:
        if r.note:
            print(f"{r.tool}: {r.note}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calculon", type=Path, help="path of a Calculon checkout (outside this project)")
    parser.add_argument("--calculon-python", help="interpreter for Calculon (default: <calculon>/../calculon-venv)")
    parser.add_argument("--workers", type=int, default=1, help="Calculon worker processes (-c), default 1")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds allowed per Calculon run")
    parser.add_argument("--no-mbs-break", action="store_true",
                        help="run Calculon without -m (every micro-batch size, slower)")
    parser.add_argument("--skip-no-offload", action="store_true",
                        help="skip the second Calculon run without host-memory offload")
    args = parser.parse_args(argv)
    if args.calculon is None or not (args.calculon / "bin" / "calculon").exists():
        print(USAGE)
        return 0
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # one core, set before NumPy loads
        os.environ.setdefault(var, "1")
    calculon = args.calculon.resolve()
    python = args.calculon_python or _default_python(calculon)
    app = json.loads((calculon / CALCULON_MODEL).read_text())
    print(f"case: Turing-530B (MT-NLG) on {CHIPS:,} x A100-80GB, seq {SEQ}, global batch {GLOBAL_BATCH:,}")
    print(f"calculon {_commit(calculon)} ({calculon}), python {python}, {args.workers} worker(s), "
          f"{'-m' if not args.no_mbs_break else 'no -m'}; its model file: {app['num_blocks']} blocks, hidden "
          f"{app['hidden']}, {app['attn_heads']} heads, seq {app['seq_size']}")
    print(f"clusterplan: korthikanti-530b on dgx-a100, bf16, best of {REPEATS}; this host: {os.cpu_count()} CPUs")
    print()
    with tempfile.TemporaryDirectory(prefix="bench-calculon-") as tmp:
        workdir = Path(tmp)
        rows = calculon_rows(calculon, python, args.workers, args.timeout, not args.no_mbs_break,
                             not args.skip_no_offload, workdir)
        rows += clusterplan_rows()
        print_table(rows)
        for row in rows:
            if row.plan is not None and row.chips is not None:
                verdict = calculon_evaluates(calculon, python, args.timeout, workdir, row.plan, row.chips)
                print(f"calculon's own prediction for the best plan of {row.tool} on {row.chips:,} GPUs: {verdict}")
    print()
    reference = rows[0]
    for row in rows:
        if not row.tool.startswith("clusterplan"):
            continue
        if row.rate and reference.rate:
            print(f"ratio {row.tool} / calculon: {row.rate / reference.rate:,.0f}x plans/s enumerated, "
                  f"{(row.timed_rate or 0) / reference.rate:,.0f}x plans/s timed")
        else:
            print(f"ratio {row.tool} / calculon: n/a (no plans on one side)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
