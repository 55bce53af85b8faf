"""``python -m benchmarks``: training-step time and peak memory per backend x adjoint x K.

Every configuration runs in its own subprocess (``python -m benchmarks.worker``, see its
docstring for exactly what is measured), bounded by ``--timeout`` seconds; a configuration that
fails or times out is recorded with its error and the run goes on. Results go to
``benchmarks/results/benchmark-<timestamp>.json`` and ``.md`` (git-ignored; the JSON is
rewritten after every configuration, so a cut-off run keeps what it measured) and the table is
printed. The machine (CPU model, cores, load average before and after, versions) is recorded.

Sizes (everything, the reference included): batch 4, T = 15, a 64 x 64 state, ConvLSTM 48
channels, prior 32 channels, float32, Adam lr 1e-3; K solver steps. Our backends run
ocean4dvarnet's architecture (`pipekit_cycle.ocean4dvarnet_config`, dropout 0 on both sides):
the same maths as the reference row.

Adjoints: ``unrolled`` (plain backprop through K steps: the baseline), ``checkpoint``
(RecursiveCheckpointAdjoint(None): ceil(log2 K) stored states, binomial schedule, up to
log2 K recomputations of a step), ``checkpoint:all`` (RecursiveCheckpointAdjoint(K): every
step's input state stored, each step recomputed once, one step's graph alive at a time),
``truncated:1`` (TruncatedAdjoint(1)), all on the learned
ConvLSTM solve; ``implicit`` times ANOTHER computation, the ``solver="fixed_point"`` solve
(exactly K iterations ``x <- m y + (1 - m) phi(x)``, prior weights scaled by 0.3 so the map
contracts) under ImplicitAdjoint(max_steps=K, rtol=0, atol=0). Backend ``reference``: ocean4dvarnet 1.0.6's
``GradSolver`` (one row per K; install it with ``--install-reference``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks._measure import gpu_info, machine_info

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
BACKENDS = ("vardax_jax", "vardax_torch", "reference")
ADJOINTS = ("unrolled", "checkpoint", "checkpoint:all", "truncated:1", "implicit")
FULL_KS = (8, 16, 32, 64)
QUICK_KS = (8, 16)


def install_reference() -> int:
    """Install the public PyTorch 4DVarNet (``ocean4dvarnet==1.0.6``) without its pins (they
    clash with ours: numpy 1.26, pytorch-lightning 2.3.3, xarray ...), then what its ``models``
    module imports, with torch held at the project's pin by ``constraints.txt``."""
    pip = [sys.executable, "-m", "pip", "install"]
    commands = [[*pip, "--no-deps", "ocean4dvarnet==1.0.6"],
                [*pip, "-c", str(ROOT / "constraints.txt"), "kornia", "pandas", "pytorch-lightning"]]
    for command in commands:
        print("+", " ".join(command), flush=True)
        code = subprocess.call(command)
        if code:
            return code
    return 0


def _jobs(args: argparse.Namespace) -> list[tuple[str, str, int]]:
    jobs = []
    for k in args.ks:
        for backend in args.backends:
            if backend == "reference":
                jobs.append((backend, "unrolled", k))
            else:
                jobs.extend((backend, adjoint, k) for adjoint in args.adjoints)
    return jobs


def run_job(backend: str, adjoint: str, k: int, args: argparse.Namespace) -> dict[str, Any]:
    """One configuration in a fresh ``python -m benchmarks.worker`` process."""
    command = [sys.executable, "-m", "benchmarks.worker", "--backend", backend, "--adjoint", adjoint, "--k", str(k),
               "--repeats", str(args.repeats), "--device", args.device, "--threads", str(args.threads)]
    if backend == "vardax_jax" and args.jax_compile_only:
        command.append("--compile-only")
    env = dict(os.environ)
    if backend == "vardax_jax" and args.xla_flags is not None:
        env["XLA_FLAGS"] = args.xla_flags
    row: dict[str, Any] = {"backend": backend, "adjoint": adjoint, "K": k}
    start = time.perf_counter()
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout, env=env, cwd=ROOT)
    except subprocess.TimeoutExpired:
        row["error"] = f"timed out after {args.timeout} s"
        return row
    finally:
        row["process_s"] = time.perf_counter() - start
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode or not lines:
        text = (out.stderr or out.stdout).strip().splitlines()
        causes = [line.strip() for line in text if "Error" in line and "equinox.filter_jit" not in line]
        row["error"] = f"exit {out.returncode}: " + " | ".join((causes or text)[-3:])
        return row
    row.update(json.loads(lines[-1]))
    return row


def _find(rows: list[dict[str, Any]], backend: str, adjoint: str, k: int) -> dict[str, Any] | None:
    for row in rows:
        if row["backend"] == backend and row["adjoint"] == adjoint and row["K"] == k and "error" not in row:
            return row
    return None


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b <= 0:
        return None
    return a / b


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def table(rows: list[dict[str, Any]]) -> str:
    """The markdown table: one row per configuration, with ratios to the reference at the same K."""
    head = ("| backend | adjoint | K | step median (ms) | step min (ms) | peak RSS step (MiB) | peak RSS abs (MiB) "
            "| allocator (MiB) | allocator kind | time / ref | alloc / ref | RSS step / ref |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['backend']} | {row['adjoint']} | {row['K']} | ERROR: {row['error'][:160]} "
                         "| | | | | | | | |")
            continue
        ref = _find(rows, "reference", "unrolled", row["K"])
        if row.get("time_s") is None:  # compile-only (JAX): memory of the compiled step, nothing ran
            alloc_ratio = _ratio(row["alloc_mib"], ref["alloc_mib"]) if ref else None
            lines.append(f"| {row['backend']} | {row['adjoint']} | {row['K']} | (compile only) | - | - | - | "
                         f"{_fmt(row['alloc_mib'], '.1f')} | {row['alloc_kind']} | - | {_fmt(alloc_ratio)} | - |")
            continue
        time_ratio = _ratio(row["time_s"], ref["time_s"]) if ref else None
        alloc_ratio = _ratio(row["alloc_mib"], ref["alloc_mib"]) if ref else None
        rss_ratio = _ratio(max(row["rss_mib"], 1.0), max(ref["rss_mib"], 1.0)) if ref else None
        lines.append(
            f"| {row['backend']} | {row['adjoint']} | {row['K']} | {row['time_s'] * 1e3:.0f} | "
            f"{row['time_min_s'] * 1e3:.0f} | {row['rss_mib']:.1f} | {row['rss_abs_mib']:.0f} | "
            f"{_fmt(row['alloc_mib'], '.1f')} | {row['alloc_kind']} | {_fmt(time_ratio)} | {_fmt(alloc_ratio)} | "
            f"{_fmt(rss_ratio)} |")
    return "\n".join(lines)


def _row_order(backend: str, adjoint: str) -> tuple[int, int]:
    """Sort key: backends and adjoints in the order of `BACKENDS` and `ADJOINTS`."""
    return (BACKENDS.index(backend) if backend in BACKENDS else len(BACKENDS),
            ADJOINTS.index(adjoint) if adjoint in ADJOINTS else len(ADJOINTS))


def summary(rows: list[dict[str, Any]]) -> str:
    """A compact markdown table: one line per backend x adjoint, per K the median step time in
    ms, its ratio to the reference at that K, and the allocator figure in MiB."""
    ks = sorted({r["K"] for r in rows})
    head = "| backend | adjoint | " + " | ".join(f"K={k}: ms (x ref), MiB" for k in ks) + " |"
    lines = [head, "|" + "---|" * (len(ks) + 2)]
    for backend, adjoint in sorted({(r["backend"], r["adjoint"]) for r in rows}, key=lambda key: _row_order(*key)):
        cells = []
        for k in ks:
            row, ref = _find(rows, backend, adjoint, k), _find(rows, "reference", "unrolled", k)
            if row is None or row.get("time_s") is None:
                cells.append("-")
                continue
            ratio = _ratio(row["time_s"], ref["time_s"]) if ref and backend != "reference" else None
            cells.append(f"{row['time_s'] * 1e3:.0f}" + (f" ({ratio:.2f})" if ratio else "")
                         + f", {_fmt(row['alloc_mib'], '.0f')}")
        lines.append(f"| {backend} | {adjoint} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _mem_ratio(rows: list[dict[str, Any]], backend: str, adjoint: str, hi: int, lo: int,
               ) -> tuple[float | None, float | None]:
    a, b = _find(rows, backend, adjoint, hi), _find(rows, backend, adjoint, lo)
    if a is None or b is None:
        return None, None
    rss = None if a["rss_mib"] is None or b["rss_mib"] is None else _ratio(max(a["rss_mib"], 1.0),
                                                                           max(b["rss_mib"], 1.0))
    return _ratio(a["alloc_mib"], b["alloc_mib"]), rss


def targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's targets, each as ``{target, backend, ratio, threshold, verdict, detail}``;
    ``verdict`` is PASS, FAIL, REPORT (no threshold) or n/a (a configuration was not measured;
    memory ratios then fall back to the largest / smallest K measured, labelled as a proxy)."""
    out: list[dict[str, Any]] = []
    backends = sorted({r["backend"] for r in rows if r["backend"] != "reference"})
    ks = sorted({r["K"] for r in rows})

    def verdict(ratio: float | None, threshold: float) -> str:
        return "n/a" if ratio is None else ("PASS" if ratio <= threshold else "FAIL")

    for backend in backends:
        fast, slow = _find(rows, backend, "truncated:1", 16), _find(rows, backend, "unrolled", 16)
        ratio = _ratio(fast["time_s"], slow["time_s"]) if fast and slow and fast["time_s"] else None
        out.append({"target": "truncated:1 step time / unrolled at K=16", "backend": backend, "ratio": ratio,
                    "threshold": 0.45, "verdict": verdict(ratio, 0.45), "detail": ""})
        for adjoint, threshold in (("checkpoint", 3.0), ("implicit", 1.3), ("truncated:1", 1.3)):
            alloc, rss = _mem_ratio(rows, backend, adjoint, 64, 8)
            detail = f"RSS-step ratio {_fmt(rss)}"
            if alloc is None and len(ks) >= 2:
                proxy, proxy_rss = _mem_ratio(rows, backend, adjoint, ks[-1], ks[0])
                detail = (f"K=64 or K=8 not measured; proxy K={ks[-1]}/K={ks[0]}: allocator {_fmt(proxy)}, "
                          f"RSS-step {_fmt(proxy_rss)}")
            out.append({"target": f"{adjoint} peak memory K=64 / K=8 (allocator)", "backend": backend,
                        "ratio": alloc, "threshold": threshold, "verdict": verdict(alloc, threshold),
                        "detail": detail})
    # Issue 15, the same maths as the reference (ocean4dvarnet's architecture on both sides);
    # it replaces the earlier "checkpoint step <= 1.0x the reference", which compared our own
    # architecture (a 78-channel ConvLSTM input) with ocean4dvarnet's (63 channels).
    for backend in backends:
        is_torch = backend == "vardax_torch"
        for adjoint, threshold in (("unrolled", 1.0), ("checkpoint", 1.3), ("checkpoint:all", 1.3)):
            for k in ks:
                mine, ref = _find(rows, backend, adjoint, k), _find(rows, "reference", "unrolled", k)
                if mine is None or ref is None or mine.get("time_s") is None:
                    continue
                ratio = _ratio(mine["time_s"], ref["time_s"])
                out.append({"target": f"{adjoint} step time / reference at K={k}", "backend": backend,
                            "ratio": ratio, "threshold": threshold if is_torch else None,
                            "verdict": verdict(ratio, threshold) if is_torch else "REPORT",
                            "detail": f"alloc ratio {_fmt(_ratio(mine['alloc_mib'], ref['alloc_mib']))}"})
        for adjoint in ("checkpoint", "checkpoint:all"):
            mine, ref = _find(rows, backend, adjoint, 64), _find(rows, "reference", "unrolled", 64)
            if mine is None or ref is None:
                continue
            ratio = _ratio(mine["alloc_mib"], ref["alloc_mib"])
            out.append({"target": f"{adjoint} peak memory / reference at K=64 (allocator)", "backend": backend,
                        "ratio": ratio, "threshold": 0.2 if is_torch else None,
                        "verdict": verdict(ratio, 0.2) if is_torch else "REPORT",
                        "detail": f"{_fmt(mine['alloc_mib'], '.0f')} vs {_fmt(ref['alloc_mib'], '.0f')} MiB"})
    return out


def targets_markdown(items: list[dict[str, Any]]) -> str:
    """The targets as a markdown table."""
    lines = ["| target | backend | ratio | threshold | verdict | detail |", "|---|---|---|---|---|---|"]
    for item in items:
        lines.append(f"| {item['target']} | {item['backend']} | {_fmt(item['ratio'], '.3f')} | "
                     f"{_fmt(item['threshold'], '.2f')} | {item['verdict']} | {item['detail']} |")
    return "\n".join(lines)


def _loads(values: list[float] | None) -> str:
    return "-" if not values else "/".join(f"{v:.1f}" for v in values)


def machine_markdown(info: dict[str, Any]) -> str:
    """The machine block of the report."""
    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items() if v)
    return (f"Machine: {info['cpu']}, {info['logical_cores']} logical cores, {info['memory_gib']} GiB; "
            f"load average (1, 5, 15 min) before {_loads(info['load_average'])}, after "
            f"{_loads(info.get('load_average_after'))}; "
            f"{info['platform']}; Python {info['python']}; {versions}; commit {info['git_commit']}; "
            f"XLA_FLAGS={info.get('xla_flags_jax')!r}; device {info.get('device')}"
            + (f" ({info['gpu']})." if info.get("gpu") else "."))


def render(paths: list[Path]) -> int:
    """Print the machine lines, the merged table and the targets of result JSON files; a row of
    a later file replaces the row of the same (backend, adjoint, K) from an earlier one."""
    merged: dict[tuple[str, str, int], dict[str, Any]] = {}
    for path in paths:
        data = json.loads(path.read_text())
        info = data["machine"]
        print(f"{path.name}: {machine_markdown(info)}\n")
        for row in data["rows"]:
            merged[(row["backend"], row["adjoint"], row["K"])] = row
    rows = sorted(merged.values(), key=lambda r: (r["K"], *_row_order(r["backend"], r["adjoint"])))
    print(table(rows) + "\n\n## Summary\n\n" + summary(rows) + "\n\n## Targets\n\n" + targets_markdown(targets(rows)))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the grid, write JSON + markdown under ``benchmarks/results/``, print the table."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="K in {8, 16} and 2 repeats")
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    parser.add_argument("--adjoints", nargs="+", default=list(ADJOINTS), choices=ADJOINTS)
    parser.add_argument("--ks", nargs="+", type=int, default=None, help="solver steps (default 8 16 32 64)")
    parser.add_argument("--repeats", type=int, default=None, help="timed steps after warm-up (default 5; quick 2)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                        help="cuda: torch moves model and batch to the GPU; JAX uses its default backend")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per configuration subprocess")
    parser.add_argument("--xla-flags", default=None, help="XLA_FLAGS for the JAX workers (default: inherited)")
    parser.add_argument("--jax-compile-only", action="store_true",
                        help="vardax_jax rows: compiled temp memory only (no run, no time)")
    parser.add_argument("--label", default="", help="a tag added to the result file names")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--install-reference", action="store_true",
                        help="pip-install ocean4dvarnet 1.0.6 (--no-deps) and its models' imports, then exit")
    parser.add_argument("--render", type=Path, nargs="+", default=None, metavar="JSON",
                        help="print the table and targets of earlier result files (merged; partial runs too)")
    args = parser.parse_args(argv)
    if args.install_reference:
        return install_reference()
    if args.render:
        return render(args.render)
    args.ks = args.ks or list(QUICK_KS if args.quick else FULL_KS)
    args.repeats = args.repeats or (2 if args.quick else 5)
    if args.device == "cuda":
        probe = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.is_available())"],
                               capture_output=True, text=True)
        if probe.stdout.strip() != "True":
            print("error: --device cuda but torch.cuda.is_available() is False (CPU build or no GPU)", file=sys.stderr)
            return 2
    info = machine_info()
    info["xla_flags_jax"] = args.xla_flags if args.xla_flags is not None else os.environ.get("XLA_FLAGS", "")
    info["device"] = args.device
    info["gpu"] = gpu_info() if args.device == "cuda" else None
    info["argv"] = sys.argv[1:] if argv is None else argv
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S") + (f"-{args.label}" if args.label else "")
    args.out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = args.out / f"benchmark-{stamp}.json", args.out / f"benchmark-{stamp}.md"
    rows: list[dict[str, Any]] = []
    jobs = _jobs(args)
    print(f"{len(jobs)} configurations, repeats {args.repeats}, device {args.device}; load {info['load_average']}",
          flush=True)
    for i, (backend, adjoint, k) in enumerate(jobs, 1):
        row = run_job(backend, adjoint, k, args)
        rows.append(row)
        if "error" in row:
            print(f"[{i}/{len(jobs)}] {backend} {adjoint} K={k}: {row['error']}", flush=True)
        elif row.get("time_s") is None:
            print(f"[{i}/{len(jobs)}] {backend} {adjoint} K={k}: compiled, {row['alloc_kind']} "
                  f"{_fmt(row['alloc_mib'], '.1f')} MiB [{row['process_s']:.0f} s]", flush=True)
        else:
            print(f"[{i}/{len(jobs)}] {backend} {adjoint} K={k}: step {row['time_s'] * 1e3:.0f} ms "
                  f"(min {row['time_min_s'] * 1e3:.0f}), RSS +{row['rss_mib']:.1f} MiB "
                  f"(abs {row['rss_abs_mib']:.0f}), {row['alloc_kind']} {_fmt(row['alloc_mib'], '.1f')} MiB "
                  f"[{row['process_s']:.0f} s]", flush=True)
        json_path.write_text(json.dumps({"machine": info, "rows": rows}, indent=2))
    info["load_average_after"] = list(os.getloadavg())
    items = targets(rows)
    report = "\n\n".join([f"# Benchmark {stamp}", machine_markdown(info), table(rows), "## Summary", summary(rows),
                          "## Targets", targets_markdown(items)]) + "\n"
    json_path.write_text(json.dumps({"machine": info, "rows": rows, "targets": items}, indent=2))
    md_path.write_text(report)
    print("\n" + report)
    print(f"wrote {json_path} and {md_path}")
    return 0
