"""``python -m benchmarks``: reproduce every figure of the README and print one table.

Use ``benchmarks/run``, which first makes the virtualenvs this needs.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from . import env
from .table import Row, render

HERE = Path(__file__).resolve().parent


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="benchmarks", description=__doc__)
    parser.add_argument(
        "--figures", default="1,2,3,4,5", help="which figures to run (2 comes with 1), e.g. 1,4"
    )
    parser.add_argument("--users", type=int, default=10_000, help="figure 1 (default 10000)")
    parser.add_argument(
        "--sdk-users",
        type=int,
        default=500,
        help="users the SDK loop sends, reported as a rate (default 500)",
    )
    parser.add_argument(
        "--also-concurrency",
        default="16",
        help="figure 1 is also run at these --concurrency values (default 16; '' for none)",
    )
    parser.add_argument(
        "--experiment-breaker",
        action="store_true",
        help="figure 1 once more with the circuit breaker's cache reads stubbed out "
        "(analysis of where the time goes; not the shipped behaviour)",
    )
    parser.add_argument(
        "--latency", type=float, default=0.02, help="simulated API latency, seconds (default 0.02)"
    )
    parser.add_argument(
        "--rate-users",
        type=int,
        default=2000,
        help="figure 3; 2000 at 10/s take ~210 s (e.g. 600 for ~65 s)",
    )
    parser.add_argument(
        "--memory-users",
        default="50000,200000",
        help="figure 5: the two sizes compared (default 50000,200000)",
    )
    parser.add_argument(
        "--save-rounds",
        type=int,
        default=20,
        help="figure 4: alternating blocks of each kind (default 20)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small sizes for a smoke run (numbers are not the README's)",
    )
    parser.add_argument(
        "--sdk-python",
        default=str(HERE / ".venv-sdk" / "bin" / "python"),
        help="a Python with orq-ai-sdk==4.5.25 (benchmarks/run makes one)",
    )
    args = parser.parse_args()
    if args.quick:
        args.users, args.sdk_users, args.rate_users = 2000, 100, 300
        args.memory_users, args.save_rounds = "5000,20000", 5
    return args


def main() -> None:
    args = parse_args()
    figures = {f.strip() for f in args.figures.split(",")}
    env.setup_django()
    machine = env.machine()
    started = time.monotonic()
    rows: list[Row] = []
    raw: dict[str, Any] = {"machine": machine, "args": vars(args)}
    try:
        if figures & {"1", "2"}:
            from . import fig_bulk

            also = [int(c) for c in args.also_concurrency.split(",") if c.strip()]
            new, raw["bulk"] = fig_bulk.run(
                args.users,
                args.sdk_users,
                args.latency,
                args.sdk_python,
                also,
                args.experiment_breaker,
            )
            rows += new
        if "3" in figures:
            from . import fig_ratelimit

            new, raw["ratelimit"] = fig_ratelimit.run(args.rate_users, args.latency)
            rows += new
        if "4" in figures:
            from . import fig_save

            new, raw["save"] = fig_save.run(args.save_rounds, 100)
            rows += new
        if "5" in figures:
            from . import fig_memory

            small, large = (int(n) for n in args.memory_users.split(","))
            new, raw["memory"] = fig_memory.run(small, large)
            rows += new
    finally:
        env.reset()  # no users, rows, queued tasks or limiter keys left behind
    raw["seconds"] = time.monotonic() - started
    raw["rows"] = [row.as_dict() for row in rows]
    print()
    print(render(rows))
    print()
    print(
        "Machine: "
        + ", ".join(f"{k} {v}" for k, v in machine.items())
        + f"; total {raw['seconds']:.0f} s"
    )
    env.RESULTS.mkdir(exist_ok=True)
    (env.RESULTS / "latest.json").write_text(json.dumps(raw, indent=2, default=str))


if __name__ == "__main__":
    main()
