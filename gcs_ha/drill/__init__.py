"""gcs-ha drill: faults under load, every history checked (see DESIGN.md)."""
