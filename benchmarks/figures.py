"""The documentation's benchmark figures, drawn from the reported runs (``benchmarks/reported/*.json``).

``python -m benchmarks.figures [--reported DIR] [--out DIR]`` writes into ``docs/figures/``:

* ``adjoint-memory-time.png``: the 2026-11-28 runs, CPU (the 2-core AMD EPYC) and GPU (one
  H200): the allocator's peak memory and the median step time against the number of solver
  steps K, for each backend and adjoint, with the ocean4dvarnet reference;
* ``same-maths-cpu.png``: the 2026-12-03 runs on ocean4dvarnet's architecture (torch on one
  thread): each adjoint's step time as a ratio to the reference measured in the same run, and
  its peak memory.

The runs of one day on one device are merged as ``python -m benchmarks --render`` merges them: a
later file's row replaces an earlier one's for the same (backend, adjoint, K); rows that
failed (no time) are left out. The PNGs are committed, so the docs build never runs this
(matplotlib, headless).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
REPORTED = ROOT / "benchmarks" / "reported"
OUT = ROOT / "docs" / "figures"

ADJOINTS = ("unrolled", "checkpoint", "checkpoint:all", "truncated:1", "implicit")
COLOURS = {"unrolled": "tab:red", "checkpoint": "tab:blue", "checkpoint:all": "tab:purple",
           "truncated:1": "tab:green", "implicit": "tab:orange"}
STYLES = {"vardax_torch": "-", "vardax_jax": "--"}


def load(reported: Path = REPORTED) -> list[dict[str, Any]]:
    """Every reported run: ``{"file", "day", "machine", "rows", ...}``, in file-name (time) order."""
    runs = []
    for path in sorted(reported.glob("benchmark-*.json")):
        data = json.loads(path.read_text())
        data["file"], data["day"] = path.name, path.name.split("-")[1]
        runs.append(data)
    return runs


def measured(row: dict[str, Any]) -> bool:
    return row.get("time_s") is not None and row.get("alloc_mib") is not None


def merged(runs: list[dict[str, Any]], day: str, device: str) -> dict[tuple[str, str, int], dict[str, Any]]:
    """The rows of ``day``'s runs on ``device`` (``"cpu"`` or ``"cuda"``), later files first."""
    rows: dict[tuple[str, str, int], dict[str, Any]] = {}
    for run in runs:
        if run["day"] == day and run["machine"]["device"] == device:
            rows.update({(r["backend"], r["adjoint"], r["K"]): r for r in run["rows"] if measured(r)})
    return rows


def machine_line(runs: list[dict[str, Any]], day: str, device: str) -> str:
    """Where and how ``day``'s runs on ``device`` were measured, for a figure's title."""
    chosen = [run for run in runs if run["day"] == day and run["machine"]["device"] == device]
    info = chosen[0]["machine"]
    where = (info["gpu"].split(",")[0] if info.get("gpu") else
             f"{info['logical_cores']}-core {info['cpu']}")
    threads = "/".join(map(str, sorted({r["threads"] for run in chosen for r in run["rows"] if r.get("threads")})))
    versions = info["versions"]
    jax = any(r["backend"] == "vardax_jax" for run in chosen for r in run["rows"])
    return (f"{day[:4]}-{day[4:6]}-{day[6:]}, {where}: torch {versions['torch']} on {threads} thread(s)"
            + (f", jax {versions['jax']}" if jax else ""))


def _series(rows: dict[tuple[str, str, int], dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    series: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for (backend, adjoint, _), row in sorted(rows.items(), key=lambda item: item[0][2]):
        series[backend, adjoint].append(row)
    return series


def _style(backend: str, adjoint: str) -> dict[str, Any]:
    if backend == "reference":
        return {"color": "black", "linestyle": ":", "marker": "s", "label": "ocean4dvarnet (reference)"}
    return {"color": COLOURS.get(adjoint, "grey"), "linestyle": STYLES[backend], "marker": "o",
            "label": f"{backend} {adjoint}"}


def _order(key: tuple[str, str]) -> tuple[int, int]:
    backend, adjoint = key
    return ((0 if backend == "vardax_jax" else 1 if backend == "vardax_torch" else 2),
            ADJOINTS.index(adjoint) if adjoint in ADJOINTS else len(ADJOINTS))


def adjoint_memory_time(runs: list[dict[str, Any]], out: Path, day: str = "20261128") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    devices = [d for d in ("cpu", "cuda") if merged(runs, day, d)]
    fig, axes = plt.subplots(len(devices), 2, figsize=(12, 4.6 * len(devices) + 0.8), squeeze=False)
    for ax_row, device in zip(axes, devices, strict=True):
        series = _series(merged(runs, day, device))
        for key in sorted(series, key=_order):
            ks = [r["K"] for r in series[key]]
            ax_row[0].plot(ks, [r["alloc_mib"] for r in series[key]], **_style(*key))
            ax_row[1].plot(ks, [1e3 * r["time_s"] for r in series[key]], **_style(*key))
        for ax, what in zip(ax_row, ("peak memory (MiB, allocator)", "median step time (ms)"), strict=True):
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xticks([8, 16, 32, 64], ["8", "16", "32", "64"])
            ax.set_xlabel("solver steps K")
            ax.set_ylabel(what)
            ax.grid(True, which="both", alpha=0.3)
            ax.set_title(machine_line(runs, day, device), fontsize=9)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=5, fontsize=8, frameon=False)
    fig.suptitle("One training step (batch 4, T=15, 64x64): memory and time against K, per adjoint")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    path = out / "adjoint-memory-time.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def same_maths(runs: list[dict[str, Any]], out: Path, day: str = "20261203") -> Path:
    """Step time / the reference of the same run, and memory, on ocean4dvarnet's architecture."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen = [run for run in runs if run["day"] == day and any(r["backend"] == "reference" for r in run["rows"])]
    fig, (ratio_ax, memory_ax) = plt.subplots(1, 2, figsize=(12, 5.2))
    markers = ("o", "^", "v", "D")
    for number, run in enumerate(chosen, start=1):
        reference = {r["K"]: r for r in run["rows"] if r["backend"] == "reference" and measured(r)}
        for (backend, adjoint), rows in sorted(_series({(r["backend"], r["adjoint"], r["K"]): r
                                                        for r in run["rows"] if measured(r)}).items(), key=lambda
                                               item: _order(item[0])):
            style = {**_style(backend, adjoint), "marker": markers[(number - 1) % len(markers)]}
            style["label"] = f"run {number}: {style['label']}"
            ks = [r["K"] for r in rows]
            if backend != "reference":
                ratio_ax.plot(ks, [r["time_s"] / reference[r["K"]]["time_s"] for r in rows], **style)
            memory_ax.plot(ks, [r["alloc_mib"] for r in rows], **style)
    ratio_ax.axhline(1.0, color="black", linestyle=":", linewidth=1)
    ratio_ax.set_ylabel("step time / reference's, same run")
    memory_ax.set_yscale("log")
    memory_ax.set_ylabel("peak memory (MiB, torch profiler)")
    for ax in (ratio_ax, memory_ax):
        ax.set_xscale("log", base=2)
        ax.set_xticks([8, 16, 32, 64], ["8", "16", "32", "64"])
        ax.set_xlabel("solver steps K")
        ax.grid(True, which="both", alpha=0.3)
        ax.set_title(machine_line(runs, day, "cpu"), fontsize=9)
    handles, labels = memory_ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.suptitle("vardax_torch on ocean4dvarnet's architecture, next to ocean4dvarnet itself (CPU)")
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    path = out / "same-maths-cpu.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.figures", description=__doc__.splitlines()[0])
    parser.add_argument("--reported", type=Path, default=REPORTED, help="folder of benchmark-*.json files")
    parser.add_argument("--out", type=Path, default=OUT, help="folder the PNG files are written into")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    runs = load(args.reported)
    for path in (adjoint_memory_time(runs, args.out), same_maths(runs, args.out)):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
