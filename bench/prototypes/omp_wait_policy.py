"""LightGBM training time with OpenMP's default (active) and passive wait policies, on a
busy machine: run it while something else keeps the cores busy.

    python bench/prototypes/omp_wait_policy.py            # both policies, each in its own process
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

ROUNDS, ROWS, COLUMNS = 100, 20_000, 40


def train_once(threads: int) -> float:
    import lightgbm as lgb
    import numpy as np

    from fraudops.model.training import LGBM_PARAMS

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(ROWS, COLUMNS)), (rng.random(ROWS) < 0.05).astype(int)
    started = time.perf_counter()
    lgb.train({**LGBM_PARAMS, "num_threads": threads, "seed": 1}, lgb.Dataset(x, y), ROUNDS)
    return time.perf_counter() - started


if __name__ == "__main__":
    if len(sys.argv) > 1:  # a child: one policy, as set in its environment
        print(f"{train_once(int(sys.argv[1])):.2f}")
        sys.exit(0)
    for policy in ("ACTIVE", "PASSIVE"):
        env = {**os.environ, "OMP_WAIT_POLICY": policy}
        for threads in (2, 1):
            out = subprocess.run(
                [sys.executable, __file__, str(threads)], env=env, capture_output=True, text=True
            )
            print(f"{policy:8} {threads} thread(s): {out.stdout.strip()} s", flush=True)
