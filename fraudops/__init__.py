"""FraudOps shared library."""
