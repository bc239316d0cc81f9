"""The replay tables (server/replays.py) classify every unary method of Ray's GCS services
exactly once, and name only methods that exist."""

from __future__ import annotations

from google.protobuf import descriptor_pool

from gcs_ha.server import forwarding, replays

TABLES = {
    "read-only": replays.READ_ONLY_METHODS,
    "keyed idempotent": replays.KEYED_IDEMPOTENT_METHODS,
    "duplicate tolerant": replays.DUPLICATE_TOLERANT_METHODS,
    "not replayed": frozenset(replays.NOT_REPLAYED),
}


def unary_ray_gcs_methods() -> set[str]:
    pool = descriptor_pool.Default()
    found = set()
    for service in forwarding.RAY_GCS_SERVICES:
        for method in pool.FindServiceByName(service).methods:
            if not method.client_streaming and not method.server_streaming:
                found.add(f"/{service}/{method.name}")
    return found


def test_every_unary_method_is_classified_exactly_once() -> None:
    methods = unary_ray_gcs_methods()
    assert len(methods) > 50
    for method in sorted(methods):
        homes = [name for name, table in TABLES.items() if method in table]
        assert len(homes) == 1, f"{method}: {homes or 'in no table'}"


def test_tables_name_only_real_unary_methods() -> None:
    # A misspelt service (InternalPubSubGcsService, which Ray 2.60 split in two) silently
    # turned replays of subscriber polls off once.
    methods = unary_ray_gcs_methods()
    for name, table in TABLES.items():
        assert table <= methods, f"{name}: {sorted(table - methods)}"
        for method in table:
            assert forwarding.method_kind(method) is forwarding.Kind.UNARY_UNARY


def test_replayable_is_everything_but_the_not_replayed() -> None:
    assert unary_ray_gcs_methods() - set(replays.NOT_REPLAYED) == replays.REPLAYABLE_METHODS
    assert "/ray.rpc.InternalKVGcsService/InternalKVPut" not in replays.REPLAYABLE_METHODS
