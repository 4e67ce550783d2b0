"""Figures 1 and 2: bulk sync speed against the SDK loop and bare requests; a rerun's cost."""

from __future__ import annotations

import sys
from typing import Any

from . import env
from .table import Row


def run(
    users: int,
    sdk_users: int,
    latency: float,
    sdk_python: str,
    also: list[int],
    experiment: bool = False,
) -> tuple[list[Row], dict[str, Any]]:
    """Figure 1 at the command's default concurrency (and at each of ``also``); figure 2."""
    default = int(env.run_child("default-concurrency")["concurrency"])
    raw: dict[str, Any] = {"users": users, "default_concurrency": default, "runs": []}
    rows: list[Row] = []
    with env.fake_server(latency) as server:
        sdk = env.run_json([sdk_python, "benchmarks/sdk_loop.py", server.url, str(sdk_users)])
        raw["sdk"] = sdk
        rows.append(
            Row(
                "1",
                f"Official SDK contacts.create loop ({sdk_users} users)",
                f"{sdk['rate']:,.1f} contacts/s",
            )
        )
        for concurrency in [default, *(c for c in also if c != default)]:
            run_raw = _one(server, users, concurrency, concurrency == default)
            raw["runs"].append(run_raw)
            rows += _rows(run_raw, users, latency, sdk["rate"], default)
            if experiment:
                rows.append(_experiment(server, users, concurrency, run_raw, raw))
        rerun = raw["runs"][0]["rerun"]
    rows.append(
        Row(
            "2",
            "Second run, nothing changed: API calls",
            str(rerun["server_calls"]),
            "0",
            rerun["server_calls"] == 0 and rerun["returncode"] == 0,
        )
    )
    rows.append(
        Row(
            "2",
            f"Second run: seconds per 100,000 users (measured on {users:,}, scaled)",
            f"{rerun['seconds_per_100k']:.1f} s",
        )
    )
    return rows, raw


def _one(server: Any, users: int, concurrency: int, with_rerun: bool) -> dict[str, Any]:
    env.reset()
    env.create_users(users)
    calls = max(1000, users // 2)
    flags = ["--concurrency", str(concurrency)]
    base = {"ORQ_BENCH_BASE_URL": server.url}
    # The ceiling just before and just after ours: the machine may be busy with other
    # work, and both sides of the comparison should see the same weather.
    before = _ceiling(server, calls, concurrency)
    server.reset()
    ours = env.run_child("sync", *flags, **base)
    result: dict[str, Any] = {
        "concurrency": concurrency,
        "ours": {
            **ours,
            "rate": users / ours["seconds"],
            "server_calls": server.stats()["requests"],
        },
    }
    if with_rerun:
        server.clear_requests()
        rerun = env.run_child("sync", *flags, **base)
        result["rerun"] = {
            **rerun,
            "server_calls": server.stats()["requests"],
            "seconds_per_100k": rerun["seconds"] * 100_000 / users,
        }
    after = _ceiling(server, calls, concurrency)
    result["ceiling"] = {
        "before": before,
        "after": after,
        "rate": (before["rate"] + after["rate"]) / 2,
    }
    return result


def _experiment(
    server: Any, users: int, concurrency: int, measured: dict[str, Any], raw: dict[str, Any]
) -> Row:
    """The same run with the circuit breaker's cache reads stubbed out: not shipped code,
    a measurement of what those reads cost (see the README's analysis)."""
    env.reset()
    env.create_users(users)
    server.reset()
    flags = ["--concurrency", str(concurrency)]
    stub = env.run_child("sync", *flags, ORQ_BENCH_BASE_URL=server.url, ORQ_BENCH_STUB_BREAKER="1")
    rate = users / stub["seconds"]
    raw.setdefault("breaker_stubbed", []).append({"concurrency": concurrency, **stub, "rate": rate})
    sdk_rate, ceiling = raw["sdk"]["rate"], measured["ceiling"]["rate"]
    return Row(
        "1",
        f"  experiment: same, breaker's cache reads stubbed out, {concurrency} threads",
        f"{rate:,.0f} contacts/s",
        f"{rate / sdk_rate:.1f}x SDK, {rate / ceiling:.0%} of ceiling",
    )


def _rows(
    result: dict[str, Any], users: int, latency: float, sdk_rate: float, default: int
) -> list[Row]:
    concurrency = result["concurrency"]
    rate, ceiling = result["ours"]["rate"], result["ceiling"]["rate"]
    complete = result["ours"]["returncode"] == 0 and result["ours"]["server_calls"] == users
    label = "default" if concurrency == default else "--concurrency"
    return [
        Row(
            "1",
            f"Ours: {users:,} users at {latency * 1000:.0f} ms, {label} {concurrency}",
            f"{rate:,.0f} contacts/s" + ("" if complete else " (INCOMPLETE)"),
            f">= 10x SDK: {rate / sdk_rate:.1f}x",
            rate >= 10 * sdk_rate and complete,
        ),
        Row(
            "1",
            f"Bare requests, {concurrency} threads (ceiling, mean of 2)",
            f"{ceiling:,.0f} contacts/s",
            f">= 80% of ceiling: {rate / ceiling:.0%}",
            rate >= 0.8 * ceiling and complete,
        ),
    ]


def _ceiling(server: Any, calls: int, concurrency: int) -> dict[str, Any]:
    server.reset()
    command = [sys.executable, "-m", "benchmarks.ceiling", server.url, str(calls), str(concurrency)]
    return env.run_json(command)
