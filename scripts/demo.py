"""The whole FraudOps loop on embedded defaults: ``make demo``.

Each step runs the same command a user would (``fraudops ...``, ``feast ...``,
``bentoml serve``), so the demo doubles as a walkthrough. The data directory is
``data/demo`` unless FRAUDOPS_DATA_DIR says otherwise; running it again starts afresh.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMO_DAYS = 28
DEMO_CUSTOMERS = 1000
DEMO_TERMINALS = 2000


def run(*args: str, env: dict[str, str]) -> None:
    print(f"\n$ {' '.join(args)}", flush=True)
    started = time.monotonic()
    subprocess.run(args, check=True, cwd=ROOT, env=env)
    print(f"  done in {time.monotonic() - started:.1f} s", flush=True)


def main() -> int:
    env = dict(os.environ)
    data_dir = Path(env.setdefault("FRAUDOPS_DATA_DIR", str(ROOT / "data" / "demo")))
    if data_dir.exists():
        shutil.rmtree(data_dir)
    raw = data_dir / "raw" / "transactions.parquet"
    try:
        run(
            "fraudops", "simulate",
            "--customers", str(DEMO_CUSTOMERS), "--terminals", str(DEMO_TERMINALS),
            "--days", str(DEMO_DAYS), "--start-date", "2026-04-01", "--out", str(raw),
            env=env,
        )  # fmt: skip
        run("fraudops", "ingest", str(raw), env=env)
    except subprocess.CalledProcessError as exc:
        print(f"\ndemo stopped: `{' '.join(exc.cmd)}` failed (exit {exc.returncode})")
        return 1
    print(
        f"\nDemo data is in {data_dir}.\n"
        "The loop grows as the platform lands: features, training, serving, monitoring."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
