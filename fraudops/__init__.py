"""FraudOps shared library."""

import os

# LightGBM trains with OpenMP threads, which by default spin while they wait. On a machine
# where anything else runs (the scorer, a test suite, another job), spinning threads steal
# each other's cores: training 100 rounds on 20,000 x 40 rows with 2 threads took 39.0 s
# at load average 9 on 2 cores, and 1.2 s with passive waiting (one run of
# bench/prototypes/omp_wait_policy.py; 24-48 s against 1.7 s in another). Set before LightGBM loads
# its OpenMP runtime; a value the user set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
