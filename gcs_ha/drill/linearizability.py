"""Is a kvload history linearizable? One register per key, checked key by key.

    result = check_history(history, initial={b"k1": b"seed"})
    result.ok, result.violations, result.inconclusive

The model, the search (Wing & Gong with Lowe's memo) and its pruning rules are in
DESIGN.md ("The linearizability checker").

Raises nothing: a malformed history (e.g. a get that read a value no one wrote) is a
violation, not an error.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from gcs_ha.testing.kvload import Op, Outcome

State = bytes | None
_GET, _PUT, _PUT_IF_ABSENT, _DEL = range(4)
_ANY = -1  # result of an UNKNOWN write (or an OK op without one): not checked
_KINDS = {"get": _GET, "del": _DEL}
_TAIL = 6  # ops of the linearization found that a violation shows before the stuck point


@dataclass(frozen=True)
class Violation:
    """A key whose history has no linearization.

    `reason` says in one line what went wrong. `stuck` are the ops none of which could take
    effect next at the deepest point the search reached (`placed` of the key's completed ops
    were in order by then); `linearized` is the end of that order (in the order found);
    `ops` is the window a reader needs, in invocation order: both of those, and the puts
    of any value a stuck get returned.
    """

    key: bytes
    ops: tuple[Op, ...]
    reason: str
    stuck: tuple[Op, ...] = ()
    linearized: tuple[Op, ...] = ()
    placed: int = 0


@dataclass(frozen=True)
class LinearizabilityResult:
    keys: int  # keys checked
    ops: int  # operations that took part (FAIL ops and UNKNOWN reads are left out)
    violations: tuple[Violation, ...]
    inconclusive: tuple[bytes, ...]  # keys whose search hit the budget
    states_explored: int

    @property
    def ok(self) -> bool:
        return not self.violations and not self.inconclusive


def check_history(
    history: Sequence[Op],
    *,
    initial: Mapping[bytes, bytes] | None = None,
    max_states_per_key: int = 2_000_000,
) -> LinearizabilityResult:
    """Check every key of `history` (any order) against the register model."""
    by_key: dict[bytes, list[Op]] = {}
    for op in history:
        by_key.setdefault(op.key, []).append(op)
    seeds = initial or {}
    keys = ops = states = 0
    violations: list[Violation] = []
    inconclusive: list[bytes] = []
    for key in sorted(by_key):
        part = [op for op in by_key[key] if _takes_part(op)]
        if not part:
            continue
        keys += 1
        ops += len(part)
        violation = _unwritten_read(key, by_key[key], seeds.get(key))
        if violation is not None:
            violations.append(violation)
            continue
        search = _KeySearch(part, seeds.get(key), max_states_per_key)
        verdict = search.run()
        states += search.states
        if verdict is None:
            inconclusive.append(key)
        elif not verdict:
            violations.append(search.violation(key))
    return LinearizabilityResult(keys, ops, tuple(violations), tuple(inconclusive), states)


def _takes_part(op: Op) -> bool:
    if op.outcome is Outcome.OK:
        return True
    return op.outcome is Outcome.UNKNOWN and op.kind != "get"


# -- the model ---------------------------------------------------------------------------

Code = tuple[int, State, int]  # kind, value, expected result (_ANY: not checked)


def _code(op: Op) -> Code:
    result = op.result if op.outcome is Outcome.OK and op.result is not None else _ANY
    if op.kind == "put":
        return (_PUT if op.overwrite else _PUT_IF_ABSENT, op.value, result)
    return (_KINDS[op.kind], op.value, result)


def _step(code: Code, state: State) -> tuple[bool, State]:
    """Apply one op to the register: (does the recorded result fit, the new value)."""
    kind, value, result = code
    if kind == _GET:
        return value == state, state
    hit = int(state is not None)  # what added/deleted would say: 1 - hit, hit
    if kind == _PUT:
        return result in (_ANY, 1 - hit), value
    if kind == _PUT_IF_ABSENT:
        return result in (_ANY, 1 - hit), (state if hit else value)
    return result in (_ANY, hit), None


# -- the search for one key --------------------------------------------------------------


@dataclass(slots=True)
class _Frame:
    """A node of the search: which completed ops are placed (all before `lo`, and those
    after it that bitset `d` has, bit 0 = op lo), which UNKNOWN writes are placed (bitset
    `u`), the register value, and the children still to try. Bitsets relative to `lo` stay
    as small as the window of concurrent ops, however long the history."""

    d: int
    u: int
    state: State
    lo: int  # first completed op (by start) not placed
    lo_end: int  # first completed op by end not placed (index into _KeySearch.by_end)
    depth: int  # completed ops placed
    op: int  # the op placed last (-1: the root)
    parent: _Frame | None = None
    children: list[tuple[int, State]] = field(default_factory=list)
    pos: int = 0


class _KeySearch:
    """Wing & Gong / Lowe search over one key's ops. Completed (OK) ops are 0..n-1 sorted by
    start; UNKNOWN writes are n..n+m-1, sorted by start. `done` marks the ops placed on the
    current path (kept in step with the DFS stack)."""

    def __init__(self, ops: Sequence[Op], initial: State, budget: int) -> None:
        done_ops = sorted((o for o in ops if o.outcome is Outcome.OK), key=_by_start)
        maybe = sorted((o for o in ops if o.outcome is not Outcome.OK), key=_by_start)
        self.ops = done_ops + maybe
        self.n = len(done_ops)
        self.read = {o.value for o in done_ops if o.kind == "get" and o.value is not None}
        self.unread = b"\xff" * (max(map(len, self.read), default=0) + 1)  # no read value
        self.codes = [self._canonical(_code(o)) for o in self.ops]
        self.real_initial = initial
        self.initial = self._token(initial)
        self.starts = [o.start for o in self.ops]
        self.by_end = sorted(range(self.n), key=lambda i: self.ops[i].end)
        self.end_at = [self.ops[i].end for i in self.by_end]
        classes: dict[Code, list[int]] = {}
        for j in range(self.n, len(self.ops)):
            classes.setdefault(self.codes[j], []).append(j)
        self.classes = list(classes.values())
        self.budget = budget
        self.done = bytearray(len(self.ops))
        self.memo: dict[tuple[int, int, State], list[int]] = {}
        self.states = 0
        self.root = _Frame(0, 0, self.initial, 0, 0, 0, -1)
        self.best = self.root  # the first deepest node
        self.best_states: set[State] = {self.initial}  # values seen with its ops placed

    def _token(self, value: State) -> State:
        """A value that no completed get returned is told apart from others only by being
        present: one token for all of them lets the memo merge their states."""
        return value if value is None or value in self.read else self.unread

    def _canonical(self, code: Code) -> Code:
        kind, value, result = code
        return code if kind == _GET else (kind, self._token(value), result)

    def run(self) -> bool | None:
        """True: linearizable; False: not; None: the budget ran out first."""
        root = self.root
        self.memo[(0, 0, self.initial)] = [0]
        self.states = 1
        if self.n == 0:
            return True
        root.children = self._children(root)
        stack = [root]
        while stack:
            top = stack[-1]
            if top.pos == len(top.children):
                stack.pop()
                if top.op >= 0:
                    self.done[top.op] = 0
                continue
            child = top.children[top.pos]
            top.pos += 1
            frame = self._enter(top, *child)
            if frame is None:
                continue
            if frame.lo == self.n:
                return True
            if self.states > self.budget:
                return None
            self._note(frame)
            stack.append(frame)
        return False

    def _enter(self, parent: _Frame, i: int, state: State) -> _Frame | None:
        """The child of `parent` that places op i, or None if a visited node covers it."""
        lo, d, u, depth = parent.lo, parent.d, parent.u, parent.depth
        if i >= self.n:
            u |= 1 << (i - self.n)
        else:
            d |= 1 << (i - lo)
            depth += 1
            if i == lo:  # shift out the run of placed ops that starts at lo
                run = (~d & (d + 1)).bit_length() - 1
                d >>= run
                lo += run
        seen = self.memo.setdefault((lo, d, state), [])
        not_u = ~u
        if any(v & not_u == 0 for v in seen):  # a visited node placed a subset of u
            return None
        seen.append(u)
        self.states += 1
        self.done[i] = 1
        lo_end = parent.lo_end
        while lo_end < self.n and self.done[self.by_end[lo_end]]:
            lo_end += 1
        frame = _Frame(d, u, state, lo, lo_end, depth, i, parent)
        if lo < self.n:
            frame.children = self._children(frame)
        return frame

    def _children(self, frame: _Frame) -> list[tuple[int, State]]:
        """The ops that may take effect next, with the value each leaves."""
        n, done, starts, state = self.n, self.done, self.starts, frame.state
        horizon = self.end_at[frame.lo_end] if frame.lo_end < n else math.inf
        out: list[tuple[int, State]] = []
        i = frame.lo
        while i < n and starts[i] <= horizon:
            if not done[i]:
                fits, after = _step(self.codes[i], state)
                if fits and after == state:
                    return [(i, after)]  # changes nothing: placing it first loses nothing
                if fits:
                    out.append((i, after))
            i += 1
        for members in self.classes:  # UNKNOWN writes alike: the earliest not placed stands
            j = next((j for j in members if not done[j]), -1)  # for them all
            if j >= 0 and starts[j] <= horizon:
                after = _step(self.codes[j], state)[1]
                if after != state:
                    out.append((j, after))
        return out

    def _note(self, frame: _Frame) -> None:
        """Remember the deepest nodes: a violation is reported where the search got stuck."""
        if frame.depth > self.best.depth:
            self.best = frame
            self.best_states = {frame.state}
        elif frame.lo == self.best.lo and frame.d == self.best.d:
            self.best_states.add(frame.state)

    def violation(self, key: bytes) -> Violation:
        """Explain a failed search: the ops that could not go next at its deepest point."""
        best, path = self.best, self._path(self.best)
        pending = [i for i in range(best.lo, self.n) if not best.d >> (i - best.lo) & 1]
        horizon = min(self.ops[i].end for i in pending)
        stuck = [self.ops[i] for i in pending if self.starts[i] <= horizon]
        placed = [self.ops[i] for i in path[-_TAIL:]]
        read = {o.value for o in stuck if o.kind == "get"}
        writes = [o for o in self.ops if o.kind == "put" and o.value in read][:2]
        fits = "; ".join(_describe(o) + self._hint(o, pending) for o in stuck[:3])
        more = f" (+{len(stuck) - 3} more)" if len(stuck) > 3 else ""
        reason = (
            f"no order explains the ops: after {best.depth} of {self.n} completed ops "
            f"the value was {self._values(path)}, and none of these fits next: {fits}{more}"
        )
        window = sorted({id(o): o for o in writes + placed + stuck}.values(), key=_by_start)
        return Violation(key, tuple(window), reason, tuple(stuck), tuple(placed), best.depth)

    @staticmethod
    def _path(frame: _Frame) -> list[int]:
        """The ops placed on the way to `frame`, in order."""
        path: list[int] = []
        node: _Frame | None = frame
        while node is not None and node.op >= 0:
            path.append(node.op)
            node = node.parent
        return path[::-1]

    def _values(self, path: list[int]) -> str:
        """The value after `path` (with real values, not tokens), and the other values the
        search found with the same ops placed in other orders."""
        state = self.real_initial
        for i in path:
            state = _step(_code(self.ops[i]), state)[1]
        others = sorted(self._fmt(s) for s in self.best_states if s != self._token(state))
        return _fmt(state) + (f" (other orders: {', '.join(others)})" if others else "")

    def _fmt(self, state: State) -> str:
        return "a value no get returned" if state == self.unread else _fmt(state)

    def _hint(self, op: Op, pending: list[int]) -> str:
        """Why a stuck get is suspicious: a completed put of what it read was placed."""
        if op.kind != "get" or op.value is None:
            return ""
        unplaced = set(pending)
        for i, w in enumerate(self.ops[: self.n]):
            wrote = w.kind == "put" and (w.overwrite or w.result == 1)
            if wrote and w.value == op.value and i not in unplaced:
                return " (already overwritten: a stale read or a lost write)"
        return ""


def _by_start(op: Op) -> tuple[float, float]:
    return (op.start, op.end)


# -- cheap, clearly explained violations -------------------------------------------------


def _unwritten_read(key: bytes, ops: Sequence[Op], initial: State) -> Violation | None:
    """A completed get of a value that no write on the key could have stored before the
    get ended (never written, only by failed puts, or only by puts begun after it)."""
    writers: dict[bytes, list[Op]] = {}
    failed: dict[bytes, list[Op]] = {}
    for op in ops:
        if op.kind != "put" or op.value is None:
            continue
        if op.outcome is Outcome.FAIL:
            failed.setdefault(op.value, []).append(op)
        elif op.outcome is Outcome.UNKNOWN or op.overwrite or op.result != 0:
            writers.setdefault(op.value, []).append(op)
    for op in sorted(ops, key=_by_start):
        read = op.value
        if op.kind != "get" or op.outcome is not Outcome.OK or read is None or read == initial:
            continue
        puts = writers.get(read, [])
        if any(p.start <= op.end for p in puts):
            continue
        lost = failed.get(read, [])
        if puts:
            why = "every write of that value began after the get ended"
        elif lost:
            why = "every put of that value failed (certainly not applied)"
        else:
            why = "no write of that value on this key could have been visible"
        window = sorted([op, *puts[:2], *lost[:2]], key=_by_start)
        return Violation(key, tuple(window), f"{_describe(op)}, but {why}", (op,))
    return None


# -- words for a report ------------------------------------------------------------------


def _fmt(value: State, width: int = 24) -> str:
    if value is None:
        return "absent"
    return repr(value) if len(value) <= width else repr(value[:width]) + "..."


def _describe(op: Op) -> str:
    """One op in a few words, e.g. "get (client 3) returned b'3.7.'"."""
    who = f"(client {op.client})"
    if op.outcome is not Outcome.OK:
        done = f"of {op.outcome.value} outcome"
    elif op.kind == "get":
        done = "returned " + ("not found" if op.value is None else _fmt(op.value))
    else:
        done = f"returned {'deleted' if op.kind == 'del' else 'added'}={op.result}"
    if op.kind == "put":
        mode = "" if op.overwrite else " overwrite=False"
        return f"put {_fmt(op.value)}{mode} {who} {done}"
    return f"{op.kind} {who} {done}"
