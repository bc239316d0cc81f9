"""The drill's linearizability checker on hand-made and simulated histories."""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import replace

import pytest

from gcs_ha.drill.linearizability import LinearizabilityResult, check_history
from gcs_ha.testing.kvload import Op, Outcome

OK, FAIL, UNKNOWN = Outcome.OK, Outcome.FAIL, Outcome.UNKNOWN


def put(
    start: float,
    end: float,
    value: bytes,
    added: int | None = None,
    *,
    outcome: Outcome = OK,
    overwrite: bool = True,
    key: bytes = b"k",
    client: int = 0,
) -> Op:
    return Op(client, "put", key, value, start, end, outcome, result=added, overwrite=overwrite)


def get(
    start: float,
    end: float,
    value: bytes | None,
    *,
    outcome: Outcome = OK,
    key: bytes = b"k",
    client: int = 1,
) -> Op:
    return Op(client, "get", key, value, start, end, outcome)


def delete(
    start: float,
    end: float,
    deleted: int | None = None,
    *,
    outcome: Outcome = OK,
    key: bytes = b"k",
    client: int = 2,
) -> Op:
    return Op(client, "del", key, None, start, end, outcome, result=deleted)


def bad_keys(result: LinearizabilityResult) -> list[bytes]:
    return [v.key for v in result.violations]


# -- hand-made histories -----------------------------------------------------------------


def test_a_sequential_history_is_linearizable() -> None:
    history = [
        get(0, 1, None),
        put(2, 3, b"a", 1),
        get(4, 5, b"a"),
        put(6, 7, b"b", 0),
        get(8, 9, b"b"),
        delete(10, 11, 1),
        get(12, 13, None),
        delete(14, 15, 0),
    ]
    result = check_history(history)
    assert result.ok
    assert (result.keys, result.ops) == (1, 8)
    assert result.states_explored >= 8


def test_a_stale_read_after_an_acknowledged_write_is_a_violation() -> None:
    stale = get(6, 7, b"a")
    result = check_history([put(0, 1, b"a", 1), put(2, 3, b"b", 0), stale])
    assert bad_keys(result) == [b"k"]
    violation = result.violations[0]
    assert violation.stuck == (stale,)
    assert "b'a'" in violation.reason and "b'b'" in violation.reason
    assert "already overwritten" in violation.reason
    assert stale in violation.ops


def test_a_read_overlapping_a_write_may_see_the_old_or_the_new_value() -> None:
    for seen in (b"a", b"b"):
        history = [put(0, 1, b"a", 1), put(2, 6, b"b", 0), get(3, 5, seen)]
        assert check_history(history).ok, seen
    # ...and both, in that order, but not new then old.
    history = [put(0, 1, b"a", 1), put(2, 9, b"b", 0), get(3, 4, b"a"), get(5, 6, b"b")]
    assert check_history(history).ok
    history = [put(0, 1, b"a", 1), put(2, 9, b"b", 0), get(3, 4, b"b"), get(5, 6, b"a")]
    assert bad_keys(check_history(history)) == [b"k"]


def test_two_concurrent_put_if_absent_cannot_both_win() -> None:
    both = [put(0, 2, b"a", 1, overwrite=False), put(1, 3, b"b", 1, overwrite=False, client=1)]
    assert bad_keys(check_history(both)) == [b"k"]
    one = [put(0, 2, b"a", 1, overwrite=False), put(1, 3, b"b", 0, overwrite=False, client=1)]
    assert check_history([*one, get(4, 5, b"a")]).ok
    assert bad_keys(check_history([*one, get(4, 5, b"b")])) == [b"k"]  # the loser wrote nothing


def test_del_results_must_match_the_register() -> None:
    assert check_history([put(0, 1, b"a"), delete(2, 3, 1), delete(4, 5, 0)]).ok
    assert bad_keys(check_history([delete(0, 1, 1)])) == [b"k"]  # nothing to delete
    assert bad_keys(check_history([put(0, 1, b"a"), delete(2, 3, 0)])) == [b"k"]
    assert bad_keys(check_history([put(0, 1, b"a"), delete(2, 3, 1), get(4, 5, b"a")])) == [b"k"]
    # Two overlapping deletes of one value: exactly one of them deletes it.
    assert check_history([put(0, 1, b"a"), delete(2, 4, 1), delete(3, 5, 0, client=3)]).ok
    both = [put(0, 1, b"a"), delete(2, 4, 1), delete(3, 5, 1, client=3)]
    assert bad_keys(check_history(both)) == [b"k"]


def test_put_added_says_whether_the_key_was_absent() -> None:
    assert bad_keys(check_history([put(0, 1, b"a", 0)])) == [b"k"]
    assert bad_keys(check_history([put(0, 1, b"a", 1), put(2, 3, b"b", 1)])) == [b"k"]


def test_an_unknown_write_may_be_observed_later() -> None:
    history = [
        put(0, 1, b"a", 1),
        put(2, 3, b"b", outcome=UNKNOWN),
        put(4, 5, b"c", 0),
        get(6, 7, b"c"),
        get(20, 21, b"b"),  # it took effect long after its call timed out
    ]
    assert check_history(history).ok


def test_an_unknown_write_may_never_take_effect() -> None:
    history = [
        put(0, 1, b"a", 1),
        put(2, 3, b"b", outcome=UNKNOWN),
        delete(3.5, 3.8, outcome=UNKNOWN),
        get(4, 5, b"a"),
        get(6, 7, b"a"),
    ]
    assert check_history(history).ok


def test_an_unknown_write_takes_effect_at_most_once() -> None:
    history = [
        put(0, 1, b"a", 1),
        put(2, 3, b"b", outcome=UNKNOWN),
        get(4, 5, b"b"),
        get(6, 7, b"a"),
    ]
    result = check_history(history)
    assert bad_keys(result) == [b"k"]
    assert result.violations[0].stuck == (history[3],)


def test_which_unknown_write_took_effect_matters() -> None:
    # added=0 needs some value present: z (not x, which the later get must see last).
    history = [
        put(0, 1, b"x", outcome=UNKNOWN),
        put(0, 1, b"z", outcome=UNKNOWN, client=3),
        put(1, 2, b"a", 0),
        get(3, 4, b"x"),
    ]
    assert check_history(history).ok
    assert bad_keys(check_history([*history, get(5, 6, b"z")])) == [b"k"]


def test_a_read_of_a_value_never_written_is_a_violation() -> None:
    result = check_history([put(0, 1, b"a"), get(2, 3, b"zz")])
    assert bad_keys(result) == [b"k"]
    assert "no write of that value" in result.violations[0].reason
    # A put that began only after the read ended cannot explain it either.
    result = check_history([get(0, 1, b"a"), put(2, 3, b"a")])
    assert "began after the get ended" in result.violations[0].reason


def test_a_lost_acknowledged_write_is_a_violation() -> None:
    history = [put(0, 1, b"old", 1), put(2, 3, b"new", 0), get(4, 5, b"old")]
    result = check_history(history)
    assert bad_keys(result) == [b"k"]
    assert result.violations[0].placed == 2


def test_a_failed_write_must_not_be_visible() -> None:
    history = [put(0, 1, b"a", 1), put(2, 3, b"b", outcome=FAIL), get(4, 5, b"b")]
    result = check_history(history)
    assert bad_keys(result) == [b"k"]
    assert "failed" in result.violations[0].reason
    assert result.ops == 2  # the failed put takes no part
    assert check_history([*history[:2], get(4, 5, b"a")]).ok


def test_unknown_reads_are_ignored() -> None:
    history = [put(0, 1, b"a", 1), get(2, 3, b"nonsense", outcome=UNKNOWN)]
    result = check_history(history)
    assert result.ok and result.ops == 1


def test_only_the_bad_key_is_reported() -> None:
    history: list[Op] = []
    for k in range(20):
        key = b"key%d" % k
        history += [put(0, 1, b"a", 1, key=key), put(2, 3, b"b", 0, key=key)]
        history.append(get(4, 5, b"a" if k == 13 else b"b", key=key))
    result = check_history(history)
    assert bad_keys(result) == [b"key13"]
    assert (result.keys, result.ops) == (20, 60)
    assert not result.inconclusive


def test_the_initial_state_is_what_the_keys_held_before() -> None:
    history = [get(0, 1, b"seed"), put(2, 3, b"x", 0, overwrite=False), get(4, 5, b"seed")]
    assert check_history(history, initial={b"k": b"seed"}).ok
    assert not check_history(history).ok
    assert not check_history(history, initial={b"other": b"seed"}).ok
    assert check_history([delete(0, 1, 1)], initial={b"k": b"seed"}).ok


def test_a_search_over_budget_is_inconclusive_not_a_violation() -> None:
    # Eight concurrent puts, then a read of the one tried first: the search must find an
    # order that puts it last, which takes more than 5 nodes.
    history = [put(0, 10, b"v%d" % c, client=c) for c in range(8)]
    history.append(get(11, 12, b"v0"))
    result = check_history(history, max_states_per_key=5)
    assert result.inconclusive == (b"k",)
    assert not result.violations and not result.ok
    assert check_history(history).ok


# -- simulated histories -----------------------------------------------------------------

KINDS = ("get", "put", "put-if-absent", "del")


def simulate(
    rng: random.Random,
    *,
    keys: int,
    clients: int,
    ops_per_client: int,
    unknown: float = 0.05,
    fail: float = 0.05,
    initial: dict[bytes, bytes] | None = None,
) -> list[Op]:
    """Clients running against one atomic register per key: each op takes effect at a
    random instant inside its interval. UNKNOWN writes take effect within their interval,
    later (after the client moved on), or never; FAIL writes never."""
    planned: list[tuple[float, int, Op]] = []  # (instant it takes effect, order, op)
    history: list[Op] = []
    for c in range(clients):
        t = rng.uniform(0, 1)
        for s in range(ops_per_client):
            start, t = t, t + rng.expovariate(1.0)
            kind = rng.choices(KINDS, weights=(4, 4, 1, 1))[0]
            op = Op(
                client=c,
                kind="put" if kind.startswith("put") else kind,  # type: ignore[arg-type]
                key=b"k%d" % rng.randrange(keys),
                value=b"%d.%d." % (c, s) if kind.startswith("put") else None,
                start=start,
                end=t,
                outcome=OK,
                overwrite=kind != "put-if-absent",
            )
            fate = rng.random()
            if fate < fail and op.kind != "get":
                history.append(replace(op, outcome=FAIL))
            elif fate < fail + unknown:
                op = replace(op, outcome=UNKNOWN, end=rng.choice((t, math.inf)))
                if op.kind == "get" or rng.random() < 0.3:
                    history.append(op)  # an unknown read, or a write that never happened
                else:
                    planned.append((rng.uniform(start, t + 5), len(planned), op))
            else:
                planned.append((rng.uniform(start, t), len(planned), op))
            t += rng.expovariate(5.0)
    state: dict[bytes, bytes] = dict(initial or {})
    for _, _, op in sorted(planned):
        history.append(apply(state, op))
    return history


def apply(state: dict[bytes, bytes], op: Op) -> Op:
    """Run `op` on the registers; the Op as a client would record it."""
    present = op.key in state
    if op.kind == "get":
        return replace(op, value=state.get(op.key))
    if op.kind == "del":
        state.pop(op.key, None)
        result = int(present)
    else:
        assert op.value is not None
        if op.overwrite or not present:
            state[op.key] = op.value
        result = int(not present)
    return replace(op, result=result) if op.outcome is OK else op


def overwritten_read(history: list[Op]) -> tuple[Op, bytes] | None:
    """A completed get and a value it certainly cannot have read: written by a completed
    put that a completed state-changing op on the key later followed (no overlap), which
    itself ended before the get began."""
    done = sorted((op for op in history if op.outcome is OK), key=lambda op: op.start)
    for g in done:
        if g.kind != "get":
            continue
        for p2 in done:
            if p2.key != g.key or p2.end >= g.start or not changes(p2):
                continue
            for p1 in done:
                wrote = p1.kind == "put" and changes(p1)
                if wrote and p1.key == g.key and p1.end < p2.start and p1.value != g.value:
                    assert p1.value is not None
                    return g, p1.value
    return None


def changes(op: Op) -> bool:
    """Did this completed write set the register (to its value, or to absent)?"""
    return op.kind == "del" or (op.kind == "put" and (op.overwrite or op.result == 1))


@pytest.mark.parametrize("seed", range(60))
def test_simulated_atomic_registers_pass_and_a_corruption_fails(seed: int) -> None:
    rng = random.Random(seed)
    initial = {b"k0": b"seed"} if seed % 2 else None
    history = simulate(rng, keys=3, clients=4, ops_per_client=25, initial=initial)
    rng.shuffle(history)  # the checker must not rely on the order ops are listed in
    result = check_history(history, initial=initial)
    assert result.ok, result.violations
    assert result.states_explored >= result.ops - sum(op.outcome is UNKNOWN for op in history)

    found = overwritten_read(history)
    assert found is not None  # 100 ops on 3 keys always have one
    g, stale = found
    corrupted = [replace(op, value=stale) if op is g else op for op in history]
    result = check_history(corrupted, initial=initial)
    assert bad_keys(result) == [g.key]
    assert replace(g, value=stale) in result.violations[0].ops


def test_a_big_history_checks_within_the_budget() -> None:
    rng = random.Random(7)
    history = simulate(rng, keys=30, clients=8, ops_per_client=1500, unknown=0.01, fail=0.01)
    assert len(history) == 12_000
    result = check_history(history, max_states_per_key=200_000)
    assert result.ok, (result.violations, result.inconclusive)
    assert result.keys == 30
    assert sum(op.outcome is UNKNOWN and op.kind != "get" for op in history) > 30


def test_a_late_violation_in_a_big_history_is_found_within_the_budget() -> None:
    rng = random.Random(11)
    history = simulate(rng, keys=30, clients=8, ops_per_client=1500, unknown=0.01, fail=0.01)
    # The last completed get of one key reads the first value ever written to it.
    done = sorted((op for op in history if op.outcome is OK), key=lambda op: op.start)
    first = next(op for op in done if op.kind == "put" and changes(op))
    last = next(op for op in reversed(done) if op.kind == "get" and op.key == first.key)
    assert first.value is not None and last.value != first.value
    assert any(first.end < op.start and op.end < last.start and changes(op) for op in done)
    corrupted = [replace(op, value=first.value) if op is last else op for op in history]
    result = check_history(corrupted, max_states_per_key=200_000)
    assert bad_keys(result) == [first.key] and not result.inconclusive
    violation = result.violations[0]
    assert violation.stuck and violation.placed > 300
    assert "stale read or a lost write" in violation.reason


# -- against every order, on tiny histories ----------------------------------------------


def brute_force(history: list[Op], initial: bytes | None) -> bool:
    """Linearizable iff some order of the completed ops plus some of the UNKNOWN writes
    respects real time and replays on a register with the recorded results."""
    must = [op for op in history if op.outcome is OK]
    maybe = [op for op in history if op.outcome is UNKNOWN and op.kind != "get"]
    for r in range(len(maybe) + 1):
        for extra in itertools.combinations(maybe, r):
            for order in itertools.permutations(must + list(extra)):
                if respects_real_time(order) and replays(order, initial):
                    return True
    return False


def respects_real_time(order: tuple[Op, ...]) -> bool:
    return not any(
        later.outcome is OK and later.end < earlier.start
        for a, earlier in enumerate(order)
        for later in order[a + 1 :]
    )


def replays(order: tuple[Op, ...], initial: bytes | None) -> bool:
    state = {} if initial is None else {b"k": initial}
    for op in order:
        real = apply(state, replace(op, outcome=OK))
        if op.outcome is OK and (real.value, real.result) != (op.value, op.result):
            return False
    return True


def random_tiny_history(rng: random.Random) -> list[Op]:
    history = []
    for i in range(rng.randint(1, 6)):
        start = rng.uniform(0, 10)
        end = start + rng.uniform(0, 4)
        outcome = rng.choices((OK, UNKNOWN, FAIL), weights=(6, 2, 1))[0]
        kind = rng.choice(("get", "put", "del"))
        if kind == "get":
            history.append(get(start, end, rng.choice((b"a", b"b", None)), outcome=outcome))
            continue
        result = rng.choice((0, 1)) if outcome is OK else None
        if kind == "del":
            history.append(delete(start, end, result, outcome=outcome, client=i))
            continue
        value = rng.choice((b"a", b"b"))
        overwrite = rng.random() < 0.6
        history.append(put(start, end, value, result, outcome=outcome, overwrite=overwrite))
    return history


def test_it_agrees_with_trying_every_order_on_tiny_histories() -> None:
    rng = random.Random(2024)
    verdicts = {True: 0, False: 0}
    for _ in range(400):
        history = random_tiny_history(rng)
        initial = rng.choice((None, b"a"))
        want = brute_force(history, initial)
        got = check_history(history, initial=None if initial is None else {b"k": initial})
        assert got.ok == want, (history, initial)
        verdicts[want] += 1
    assert min(verdicts.values()) > 80  # both verdicts are exercised
