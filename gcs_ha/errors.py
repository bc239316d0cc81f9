"""The exceptions gcs-ha raises, as one tree.

GcsHaError
├── StorageError                 the local store failed (disk, LMDB); the replica stops
│   ├── CorruptDataError         a journal, snapshot or LMDB file is damaged
│   └── DataDirError             a data dir that is missing, locked, or another node's
├── InvalidRequestError          a request that can never succeed (unknown table, too large)
├── NotFoundError                the key or object a request names does not exist
├── AlreadyExistsError           the name a request would take is taken (Ray's AlreadyExists)
├── InvalidStateError            the object named is in a state where the request cannot
│                                 succeed, e.g. an actor already destroyed (Ray's Invalid)
├── NotLeaderError               this replica does not serve writes/reads now; retry on the leader
├── UnknownOutcomeError          the write may or may not have been applied (leader lost mid-way);
│                                 retryable, and callers must be idempotent
├── UnavailableError             no leader or no quorum within the deadline; retryable
├── AdminAuthError               an admin call without a valid proof of the cluster secret
├── ResourceExhaustedError       a bounded queue is full; retry later
└── ConfigError                  bad configuration or command-line input

Each is mapped to a gRPC / Ray status in exactly one place, `gcs_ha.server.status`.
"""

from __future__ import annotations


class GcsHaError(Exception):
    """Base of every error gcs-ha raises on purpose."""


class StorageError(GcsHaError):
    """The local store failed; the replica stops rather than diverge."""


class CorruptDataError(StorageError):
    """A journal, snapshot or LMDB file is damaged beyond a torn tail."""


class DataDirError(StorageError):
    """The data dir is unusable: missing, locked by another process, or another cluster's."""


class InvalidRequestError(GcsHaError):
    """The request can never succeed as sent (unknown table, oversized key or value)."""


class NotFoundError(GcsHaError):
    """The key or object the request names does not exist (Ray's NotFound)."""


class AlreadyExistsError(GcsHaError):
    """The name the request would take is taken (Ray's AlreadyExists), e.g. a named actor."""


class InvalidStateError(GcsHaError):
    """The object the request names is in a state where the request cannot succeed
    (Ray's Invalid), e.g. creating an actor that was already destroyed."""


class NotLeaderError(GcsHaError):
    """This replica is not the serving leader.

    `leader_hint` is the leader's GCS address when known, else None.
    """

    def __init__(self, message: str = "not the leader", leader_hint: str | None = None) -> None:
        super().__init__(message)
        self.leader_hint = leader_hint


class UnknownOutcomeError(GcsHaError):
    """The write was proposed but its fate is unknown (leadership changed before the ack)."""


class UnavailableError(GcsHaError):
    """No leader or no quorum answered within the deadline."""


class AdminAuthError(GcsHaError):
    """An admin call without a valid proof of the cluster secret (gcs_ha.admin_auth)."""


class ResourceExhaustedError(GcsHaError):
    """A bounded queue is full (e.g. proposals waiting for the log); retry later."""


class StoreFullError(ResourceExhaustedError):
    """The store has no room for a write (LMDB's map or the disk, consensus/capacity.py);
    retrying will not help until data is deleted or the store is enlarged."""


class ConfigError(GcsHaError):
    """Bad configuration or command-line input; the message names the problem."""
