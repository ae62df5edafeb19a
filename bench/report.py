"""Result rows, the machine description and the Markdown table in bench/RESULTS.md."""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bench.harness import loadavg


@dataclass
class Row:
    figure: str
    what: str
    measured: str
    baseline: str = "—"
    ratio: str = "—"
    target: str = "—"
    met: bool | None = None  # None: no target, or not available
    notes: str = ""


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    details: list[str] = field(default_factory=list)
    load_start: str = field(default_factory=loadavg)
    started: datetime = field(default_factory=lambda: datetime.now(UTC))

    def add(self, row: Row) -> None:
        self.rows.append(row)
        verdict = {True: "MET", False: "MISSED", None: ""}[row.met]
        print(
            f"[{row.figure}] {row.what}: {row.measured} | baseline {row.baseline} | ratio {row.ratio} "
            f"| target {row.target} {verdict}",
            flush=True,
        )

    def note(self, text: str) -> None:
        self.details.append(text)
        print(f"    {text}", flush=True)


def _cpu_model() -> str:
    """The CPU's name, clock and widest vector instructions: the VMs this runs on have all been
    called "AMD EPYC" or "Intel Xeon", yet the model call of figure 7 took 0.12 s on one with
    AVX-512 VNNI and 0.32-0.35 s on one with AVX2 only (bench/FINDINGS.md, ninth pass)."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    name = fields.get("model name") or platform.processor() or "unknown"
    parts = [name]
    if mhz := fields.get("cpu MHz"):
        parts.append(f"{float(mhz) / 1000:.2f} GHz")
    flags = set(fields.get("flags", "").split())
    if "avx512f" in flags:
        parts.append("AVX-512" + (" VNNI" if "avx512_vnni" in flags else ""))
    elif "avx2" in flags:
        parts.append("AVX2, no AVX-512")
    return ", ".join(parts)


def _memory() -> str:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return f"{int(line.split()[1]) / 2**20:.1f} GiB"
    return "unknown"


def _os() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return f"{line.split('=', 1)[1].strip(chr(34))}, Linux {platform.release()}"
    except OSError:
        pass
    return platform.platform()


def machine() -> list[tuple[str, str]]:
    return [
        ("CPU", _cpu_model()),
        ("cores (usable by this process)", str(len(os.sched_getaffinity(0)))),
        ("memory", _memory()),
        ("Python", f"{platform.python_implementation()} {sys.version.split()[0]}"),
        ("OS", _os()),
    ]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def write(report: Report, path: Path, *, mode: str, seconds: float) -> None:
    lines = [
        "# Darkroom benchmark results",
        "",
        "Written by `./run bench`"
        + (" --quick" if mode == "quick" else "")
        + f" on {report.started:%Y-%m-%d %H:%M} UTC in {seconds:.0f} s. Every ratio is against a baseline "
        "measured in the same run on the same machine. Absolute numbers depend on the machine and on "
        "whatever else ran on it; the ratios are what the targets are about.",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
    ]
    lines += [f"| {k} | {_cell(v)} |" for k, v in machine()]
    lines += [
        f"| load average (1/5/15 min) at start | {report.load_start} |",
        f"| load average (1/5/15 min) at end | {loadavg()} |",
        "",
        "The load generators run on the same cores as the server they measure (see each figure's "
        "notes for the generator's own CPU use).",
        "",
        "## Figures",
        "",
        "| # | figure | measured | baseline (same run) | ratio | target | met? | notes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report.rows:
        met = {True: "yes", False: "**no**", None: "—"}[r.met]
        cells = [r.figure, r.what, r.measured, r.baseline, r.ratio, r.target, met, r.notes]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    if report.details:
        lines += ["", "## Details", ""]
        lines += [f"* {d}" for d in report.details]
    findings = Path(__file__).with_name("FINDINGS.md")
    if findings.is_file():  # the hand-written profiling notes, kept next to the numbers
        lines += ["", findings.read_text().strip()]
    path.write_text("\n".join(lines) + "\n")
