"""The GCS managers: one per file, named after Ray's. They see tables and an event loop,
never Raft, LMDB or gRPC internals."""
