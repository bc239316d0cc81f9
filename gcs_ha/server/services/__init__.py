"""Thin gRPC servicers: Ray's GCS services over the managers, and gcs-ha's admin service
over the replica. Each module has a `mount` (or is mounted by replica_main)."""
