"""Benchmarks: `gcs-ha bench storage` and `gcs-ha bench failover` (see DESIGN.md)."""
