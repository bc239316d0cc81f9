"""gcs-ha: Ray's Global Control Service, highly available (Raft over LMDB)."""

__version__ = "0.1.0"
