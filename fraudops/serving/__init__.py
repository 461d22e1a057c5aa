"""Scoring: the scoring core shared by the HTTP service and the stream consumer, online
feature reads, the prediction log, readiness, A/B routing and the HTTP guard."""
