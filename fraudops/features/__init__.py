"""Features: the one copy of the feature maths, the real-time customer state, the offline
build (DuckDB or Spark), the Feast repository's store, materialization, freshness and the
nightly job."""
