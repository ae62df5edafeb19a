"""``python -m bench [--quick] [--only 1,3,7] [--out PATH]``: measure every figure, write RESULTS.md."""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

from bench import report as report_mod
from bench.api_figures import FULL, QUICK, TINY, run_api_figures
from bench.model_figures import run_model_figures


def main() -> None:
    parser = argparse.ArgumentParser(prog="./run bench", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="fewer repetitions (about 2 minutes instead of 4-5)"
    )
    parser.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # the smoke test
    parser.add_argument("--only", default="", help="comma-separated figures, e.g. 1,3,7 ('+' = extras)")
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="run the bench server under pyinstrument (text report) or, for *.prof, cProfile",
    )
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "RESULTS.md", help="the Markdown table"
    )
    args = parser.parse_args()
    mode = "tiny" if args.tiny else "quick" if args.quick else "full"
    sizes = {"tiny": TINY, "quick": QUICK, "full": FULL}[mode]
    repeats = {"tiny": 1, "quick": 2, "full": 5}[mode]
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    report = report_mod.Report()
    t0 = time.perf_counter()
    asyncio.run(run_api_figures(sizes, report, only, args.profile))
    run_model_figures(report, repeats, only)
    report_mod.write(report, args.out, mode=mode, seconds=time.perf_counter() - t0)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
