"""FraudOps shared library."""

import os

# LightGBM trains with OpenMP threads, which by default spin while they wait. On a machine
# where anything else runs (the scorer, a test suite, another job), spinning threads steal
# each other's cores: training 100 rounds on 20,000 x 40 rows with 2 threads took 39.0 s
# at load average 9 on 2 cores, and 1.2 s with passive waiting (one run of
# bench/prototypes/omp_wait_policy.py; 24-48 s against 1.7 s in another). Set before LightGBM loads
# its OpenMP runtime; a value the user set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _without_feast_typechecks() -> None:
    """Feast decorates its API with typeguard's ``@typechecked``, which, at import, reads,
    parses and recompiles the source of each decorated function's module: 1.6 s of every
    process that imports Feast (`import feast`: 2.42-2.54 s with it, 0.77-0.80 s without,
    alternated in one session). The checks only turn an argument of the wrong type into an
    earlier error, so FraudOps' processes go without them: before Feast is imported, the
    decorator returns what it decorates. Processes that import Feast first (the `feast`
    CLI) keep them."""
    import sys

    if "feast" in sys.modules:
        return
    try:
        import typeguard
    except ImportError:
        return

    def typechecked(target=None, **_options):  # type: ignore[no-untyped-def]
        return target if target is not None else (lambda decorated: decorated)

    typeguard.typechecked = typechecked


_without_feast_typechecks()
