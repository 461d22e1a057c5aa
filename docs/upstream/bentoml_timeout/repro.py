"""Reproduce BentoML's request-timer retention (docs/upstream/bentoml-timeout.md).

For each mode, alternated over ``--rounds``: serve ``service:Echo`` (one worker), POST
``/echo`` back to back on ``--concurrency`` keep-alive connections for ``--seconds``,
then read the worker's ``/heap`` at once and again after the timeout has passed. Modes:
``bentoml`` (BentoML as installed) and ``cancelled`` (its middleware with the timer
cancelled, ``REPRO_CANCEL_TIMER=1``). Run from anywhere, in an environment with BentoML::

    python docs/upstream/bentoml_timeout/repro.py [--seconds 40] [--rounds 2] [--out r.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PORT = 3377
log = logging.getLogger("repro")


def get_json(path: str, body: dict[str, Any] | None = None) -> Any:
    data = json.dumps(body or {}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{PORT}{path}", data=data, headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def wait_ready(server: subprocess.Popen[bytes], limit_s: float = 120) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"bentoml serve exited with {server.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/readyz", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("the service did not become ready")


async def load(concurrency: int, seconds: float) -> dict[str, Any]:
    """Requests back to back on keep-alive connections; latencies in ms."""
    body = b'{"x": 1}'
    request = (
        b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n%s" % (len(body), body)
    )
    latencies: list[float] = []
    failed = 0
    stop = time.monotonic() + seconds

    async def connection() -> None:
        nonlocal failed
        reader, writer = await asyncio.open_connection("127.0.0.1", PORT)
        while time.monotonic() < stop:
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            latencies.append((time.perf_counter() - started) * 1e3)
            failed += not head.startswith(b"HTTP/1.1 200")
        writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    pick = lambda q: round(latencies[min(len(latencies) - 1, int(q * len(latencies)))], 2)  # noqa: E731
    return {
        "requests": len(latencies),
        "failed": failed,
        "requests_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": pick(0.50),
        "p99_ms": pick(0.99),
        "p999_ms": pick(0.999),
        "max_ms": round(latencies[-1], 2),
        "mean_ms": round(statistics.fmean(latencies), 3),
    }


def run(mode: str, concurrency: int, seconds: float, timeout_s: float) -> dict[str, Any]:
    env = {**os.environ, "REPRO_CANCEL_TIMER": "1" if mode == "cancelled" else "0"}
    command = [sys.executable, "-m", "bentoml", "serve", "service:Echo", "--port", str(PORT)]
    server = subprocess.Popen(
        command, cwd=HERE, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_ready(server)
        asyncio.run(load(concurrency, 3))  # warm-up
        time.sleep(timeout_s + 2)  # the warm-up's timers expire
        get_json("/heap", {"reset": True})
        before = get_json("/heap")
        measured = asyncio.run(load(concurrency, seconds))
        after_load = get_json("/heap", {"reset": True})
        time.sleep(timeout_s + 2)
        after_timeout = get_json("/heap")
        result = {
            "mode": mode,
            "load": measured,
            "heap_before_load": before,
            "heap_after_load": after_load,
            "heap_timeout_later": after_timeout,
        }
        log.info("%s: %s", mode, json.dumps({"load": measured, "after_load": after_load}))
        return result
    finally:
        server.terminate()
        server.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=40.0, help="load per run")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2, help="runs per mode, alternated")
    parser.add_argument("--out", type=Path, help="JSON file for the results")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    sys.path.insert(0, str(HERE))
    import bentoml

    from service import TIMEOUT_S  # the service's own setting

    runs = [
        run(mode, args.concurrency, args.seconds, TIMEOUT_S)
        for _ in range(args.rounds)
        for mode in ("bentoml", "cancelled")
    ]
    result = {
        "bentoml": bentoml.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "concurrency": args.concurrency,
        "seconds": args.seconds,
        "traffic_timeout_s": TIMEOUT_S,
        "runs": runs,
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
