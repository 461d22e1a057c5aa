"""Transactions in: the simulator, ingest of a user's files, chargeback labels, and replay
of a file through the scorer."""
