"""Monitoring: drift and performance reports on the prediction log (Evidently), and alerts."""
