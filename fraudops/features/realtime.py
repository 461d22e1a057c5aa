"""The real-time customer state: every transaction sees every earlier transaction of its
customer, exactly once, whatever scores it (workers, replicas, stream consumers, retries).

    fraudops materialize      # seeds the state of customers the store does not know yet

A customer's state is its history (its transactions of the last 30 days, at most
``MAX_HISTORY``, in commit order) and its running statistics over all its transactions
(Welford count, mean and M2 of the amount; sums of the hour angle's sine and cosine).
Each scored transaction also leaves a record, kept ``idempotency_ttl_seconds``: the
fingerprint of its request, its place in the customer's history and, once scored, its
result.

Committing a transaction is one atomic step in the store, a Lua script on Redis or one
SQLite transaction on the embedded store. If its ``transaction_id`` is new, the step
appends it to the history, advances the statistics and returns what came before it: the
history up to its timestamp and the statistics, from which the scorer computes its
features (:func:`fraudops.features.maths.customer_activity`, the offline build's function). If
the id was committed already, the step changes nothing and says so: here is the first
result (a retry, a redelivery), the first is still being scored (a duplicate in flight),
or the request differs from the first (a conflict). No lock is held between requests: a
process killed after committing leaves a record whose lease (``LEASE_MS``) runs out, and
the next request with that id finishes the work from what the record kept.

On a Redis Cluster, a customer's keys share one hash slot (``{c:<customer_id>}``); a
transaction id's claim lives in its own slot and is taken first, so that an id reused for
another customer is refused before any state changes (two round trips instead of one).
"""

from __future__ import annotations

import binascii
import hashlib
import json
import os
import sqlite3
import struct
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fraudops.core.connections import redis_client
from fraudops.core.settings import Settings
from fraudops.features import maths as f

LEASE_MS = 2_000  # how long a committed transaction may wait for its result
SEQ_DIGITS = 12  # commit sequence numbers, zero-padded so that text order is number order
# A customer's state, the one list of its fields: (name, type, description). The stores
# keep it, the offline build writes it (the table a store is seeded from), and the Feast
# view ``customer_state`` declares it from this list.
STATE = (
    ("history_time_us", "int64[]", "Times (µs) of the last 30 days' transactions, oldest first."),
    ("history_amount", "float64[]", "Their amounts."),
    ("history_terminal_id", "string[]", "Their terminals."),
    ("tx_count", "int64", "All-time transaction count."),
    ("amount_mean", "float64", "Welford running mean amount."),
    ("amount_m2", "float64", "Welford running M2 of amount."),
    ("hour_sin_sum", "float64", "Sum of sin(hour angle)."),
    ("hour_cos_sum", "float64", "Sum of cos(hour angle)."),
)
STATE_FIELDS = tuple(name for name, _, _ in STATE)
STATS = STATE_FIELDS[3:]  # the running statistics, after the history
FINGERPRINT_FIELDS = ("customer_id", "terminal_id", "amount", "timestamp")


@dataclass(frozen=True)
class Commit:
    """A transaction to commit to its customer's state."""

    transaction_id: str
    customer_id: str
    terminal_id: str
    amount: float
    time_us: int

    @property
    def fingerprint(self) -> str:
        return "\x1f".join(
            (self.customer_id, self.terminal_id, repr(self.amount), str(self.time_us))
        )

    def differs_from(self, fingerprint: str) -> list[str]:
        """The request fields in which ``fingerprint`` (another request's) differs."""
        theirs = fingerprint.split("\x1f")
        ours = self.fingerprint.split("\x1f")
        return [
            name for name, a, b in zip(FINGERPRINT_FIELDS, ours, theirs, strict=False) if a != b
        ]


@dataclass(frozen=True)
class Before:
    """Committed now: the customer's history up to the transaction's time, committed before
    it, and the running statistics before it."""

    seq: int
    time_us: np.ndarray
    amount: np.ndarray
    terminal_id: list[str]
    stats: tuple[float, float, float, float, float]


@dataclass(frozen=True)
class Replayed:
    """Committed before: the stored result."""

    result: dict[str, Any]


@dataclass(frozen=True)
class InFlight:
    """Committed by a request still being scored."""


@dataclass(frozen=True)
class Conflict:
    """The id was first used with other values of these fields."""

    fields: list[str]


Outcome = Before | Replayed | InFlight | Conflict


def _stats_text(stats: Sequence[float]) -> str:
    return " ".join(repr(float(v)) for v in stats)


def _parse_stats(text: str) -> tuple[float, float, float, float, float]:
    a, b, c, d, e = (float(v) for v in text.split())
    return a, b, c, d, e


def _hour_terms(time_us: Sequence[int]) -> tuple[list[float], list[float]]:
    """The sines and cosines of the transactions' hour angles, as the offline build
    computes them (:func:`fraudops.features.maths.advance_running_grouped`)."""
    angle = f.hour_angle(np.array(time_us, dtype=np.int64))
    return np.sin(angle).tolist(), np.cos(angle).tolist()


def _seq_text(seq: int) -> str:
    return str(seq).zfill(SEQ_DIGITS)


# --- Redis ----------------------------------------------------------------------------------
# KEYS: the customer's statistics (hash), history (sorted set by time; members from
# _member) and the transaction's record (hash); on a single Redis also the id's claim.
# ARGV: fingerprint, time (µs), amount (text, as Python writes it), terminal, sin and cos
# of the hour angle, history span (µs), max history, record TTL (ms), lease (ms), owner
# (a token per call: a call sent again, after a script was missing, finds its own commits
# and gets their answers again), the time's and amount's bits in hex.
# Numbers given to redis.call are formatted with %.17g: Lua's own tostring
# keeps 14 digits, too few for a time in µs.
_COMMIT = """
local function num(x) return string.format('%.17g', x) end
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local t = tonumber(ARGV[2])
local function before(seq)
  local rows = redis.call('ZRANGEBYSCORE', KEYS[2], num(t - tonumber(ARGV[7])), ARGV[2])
  if seq == nil then return rows end
  local out = {}
  for i = 1, #rows do
    if rows[i] < seq then out[#out + 1] = rows[i] end
  end
  return out
end
if KEYS[4] then
  local claimed = redis.call('GET', KEYS[4])
  if claimed and claimed ~= ARGV[1] then return {'conflict', claimed} end
  if not claimed then redis.call('SET', KEYS[4], ARGV[1], 'PX', ARGV[9]) end
end
-- the record: 'P' (being scored) or 'D' (done), the fingerprint's length, ':', the
-- fingerprint, then for P the seq, lease (15 digits, ms), owner (16) and the stats
-- before it; for D the result
local function pending(seq, stats)
  return 'P' .. #ARGV[1] .. ':' .. ARGV[1] .. seq
    .. string.format('%015d', now_ms + tonumber(ARGV[10])) .. ARGV[11] .. stats
end
local record = redis.call('GET', KEYS[3])
if record then
  local colon = string.find(record, ':', 2, true)
  local size = tonumber(string.sub(record, 2, colon - 1))
  local fingerprint = string.sub(record, colon + 1, colon + size)
  local rest = string.sub(record, colon + size + 1)
  if fingerprint ~= ARGV[1] then return {'conflict', fingerprint} end
  if string.sub(record, 1, 1) == 'D' then return {'done', rest} end
  local seq = string.sub(rest, 1, SEQ_DIGITS)
  local lease = tonumber(string.sub(rest, SEQ_DIGITS + 1, SEQ_DIGITS + 15))
  local owner = string.sub(rest, SEQ_DIGITS + 16, SEQ_DIGITS + 31)
  local stats = string.sub(rest, SEQ_DIGITS + 32)
  if lease > now_ms and owner ~= ARGV[11] then return {'pending'} end
  redis.call('SET', KEYS[3], pending(seq, stats), 'KEEPTTL')
  return {'new', seq, stats, before(seq)}
end
local s = redis.call('HMGET', KEYS[1], 'seq', 'count', 'mean', 'm2', 'sin', 'cos', 'last')
local seq = tonumber(s[1] or '0')
local n, mean, m2 = tonumber(s[2] or '0'), tonumber(s[3] or '0'), tonumber(s[4] or '0')
local sin, cos = tonumber(s[5] or '0'), tonumber(s[6] or '0')
local last = tonumber(s[7] or ARGV[2])
local prior = table.concat({num(n), num(mean), num(m2), num(sin), num(cos)}, ' ')
local rows = before(nil)
local x = tonumber(ARGV[3])
local count = n + 1
local delta = x - mean
mean = mean + delta / count
m2 = m2 + delta * delta * n / count
if t > last then last = t end
local seq_text = string.format('%0' .. SEQ_DIGITS .. 'd', seq)
redis.call('ZADD', KEYS[2], ARGV[2], seq_text .. ARGV[12] .. ARGV[4])  -- _member
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. num(last - tonumber(ARGV[7])))
local size = redis.call('ZCARD', KEYS[2])
if size > tonumber(ARGV[8]) then
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, size - tonumber(ARGV[8]) - 1)
end
redis.call('HSET', KEYS[1], 'seq', string.format('%d', seq + 1), 'count', num(count),
           'mean', num(mean), 'm2', num(m2), 'sin', num(sin + tonumber(ARGV[5])),
           'cos', num(cos + tonumber(ARGV[6])), 'last', num(last))
redis.call('SET', KEYS[3], pending(seq_text, prior), 'PX', ARGV[9])
return {'new', seq_text, prior, rows}
""".replace("SEQ_DIGITS", str(SEQ_DIGITS))

# KEYS: a transaction's record. ARGV: fingerprint, result (JSON). The first result stays.
# (A string, not a hash: a hash holding a result of a few hundred bytes is stored as a
# hashtable, 760 bytes against about 450 as a string, measured by bench_state_memory.py.)
_SAVE = """
local record = redis.call('GET', KEYS[1])
if not record or string.sub(record, 1, 1) ~= 'P' then return 0 end
local prefix = 'P' .. #ARGV[1] .. ':' .. ARGV[1]
if string.sub(record, 1, #prefix) ~= prefix then return 0 end
redis.call('SET', KEYS[1], 'D' .. string.sub(prefix, 2) .. ARGV[2], 'KEEPTTL')
return 1
"""

# KEYS: statistics, history. ARGV: seq, count, mean, m2, sin, cos, last, then score and
# member of each history entry. A customer the store knows already is left alone: its
# online state is newer than any batch build.
_SEED = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'seq', ARGV[1], 'count', ARGV[2], 'mean', ARGV[3], 'm2', ARGV[4],
           'sin', ARGV[5], 'cos', ARGV[6], 'last', ARGV[7])
for i = 8, #ARGV, 2000 do
  redis.call('ZADD', KEYS[2], unpack(ARGV, i, math.min(i + 1999, #ARGV)))
end
return 1
"""


class _Script:
    """A Lua script called by its SHA1 (``EVALSHA``), queued on a pipeline: redis-py's own
    ``Script`` asks the server whether it has the script before every pipeline (a round
    trip) and does not load it on a cluster's pipelines."""

    def __init__(self, body: str):
        self.body = body
        self.sha = hashlib.sha1(body.encode()).hexdigest()

    def queue(self, pipe: Any, keys: Sequence[Any], args: Sequence[Any]) -> None:
        pipe.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _member(seq: int, time_us: int, amount: float, terminal_id: str) -> bytes:
    """A history entry of the sorted set (scored by its time): the commit sequence number
    (fixed width, so that entries of equal time sort in commit order), then the time's and
    the amount's bits in hex (exact, fixed width: the history is read back without asking
    Redis to format scores, nor Python to parse text) and the terminal."""
    return (
        _seq_text(seq) + struct.pack(">q", time_us).hex() + struct.pack(">d", amount).hex()
    ).encode() + terminal_id.encode()


def _histories(
    replies: Sequence[Sequence[bytes]],
) -> list[tuple[np.ndarray, np.ndarray, list[str]]]:
    """``ZRANGEBYSCORE`` replies (the members of :func:`_member`): each one's times,
    amounts and terminals, decoded in one pass for all of them."""
    members = [m for reply in replies for m in reply]
    if not members:
        return [(np.zeros(0, dtype=np.int64), np.zeros(0), []) for _ in replies]
    cut = SEQ_DIGITS + 32
    fixed = np.frombuffer(
        binascii.unhexlify(b"".join([m[SEQ_DIGITS:cut] for m in members])), dtype=_FIXED
    )
    times = fixed["time_us"].astype(np.int64)
    amounts = fixed["amount"].astype(np.float64)
    tails = [m[cut:] for m in members]
    terminals = b"\x00".join(tails).decode().split("\x00")
    if len(terminals) != len(tails):  # an id holding a NUL
        terminals = [t.decode() for t in tails]
    out = []
    start = 0
    for reply in replies:
        end = start + len(reply)
        out.append((times[start:end], amounts[start:end], terminals[start:end]))
        start = end
    return out


_FIXED = np.dtype([("time_us", ">i8"), ("amount", ">f8")])  # a member's bits, once unhexed


class RedisStateStore:
    """The state in Redis or a Redis Cluster (``client`` is a ``redis.Redis`` or a
    ``redis.cluster.RedisCluster``)."""

    def __init__(self, client: Any, prefix: str, ttl_seconds: float):
        from redis.cluster import RedisCluster

        self.client = client
        self.cluster = isinstance(client, RedisCluster)
        self.prefix = prefix
        self.ttl_ms = int(ttl_seconds * 1000)
        self._commit = _Script(_COMMIT)
        self._save = _Script(_SAVE)
        self._seed = _Script(_SEED)
        self._kept: list[tuple[Commit, dict[str, Any]]] = []  # results not yet written
        self._kept_lock = threading.Lock()

    def _execute(self, queue: Any) -> list[Any]:
        """Run the commands ``queue(pipe)`` adds, in one pipeline; error replies come back
        in the list. Scripts are called by their SHA; where Redis does not have them
        (first use, a restarted node), they are loaded and the pipeline is sent again:
        every script here may run twice (a commit already made is found, not made again)."""
        from redis.exceptions import NoScriptError

        for attempt in range(2):
            pipe = self.client.pipeline(transaction=False)
            queue(pipe)
            replies = pipe.execute(raise_on_error=False)
            if attempt == 0 and any(isinstance(r, NoScriptError) for r in replies):
                for script in (self._commit, self._save, self._seed):
                    self.client.script_load(script.body)  # on every primary of a cluster
                continue
            return replies
        raise AssertionError("unreachable")

    # keys: a customer's keys share a hash slot; a transaction id's claim has its own
    def customer_keys(self, customer_id: str) -> tuple[str, str]:
        tag = f"{self.prefix}:{{c:{customer_id}}}"
        return f"{tag}:stats", f"{tag}:history"

    def record_key(self, commit: Commit) -> str:
        return f"{self.prefix}:{{c:{commit.customer_id}}}:tx:{commit.transaction_id}"

    def claim_key(self, transaction_id: str) -> str:
        return f"{self.prefix}:tx:{{{transaction_id}}}"

    def queue_commits(self, pipe: Any, commits: Sequence[Commit], owner: str) -> None:
        """Add the commits to ``pipe`` (on a single Redis: with their id claims); their
        replies are read by :meth:`outcomes`. On a cluster, call :meth:`claim` first."""
        sines, cosines = _hour_terms([commit.time_us for commit in commits])
        for commit, sin, cos in zip(commits, sines, cosines, strict=True):
            keys = [*self.customer_keys(commit.customer_id), self.record_key(commit)]
            if not self.cluster:
                keys.append(self.claim_key(commit.transaction_id))
            self._commit.queue(
                pipe,
                keys,
                [
                    commit.fingerprint,
                    commit.time_us,
                    repr(float(commit.amount)),
                    commit.terminal_id,
                    repr(sin),
                    repr(cos),
                    f.HISTORY_US,
                    f.MAX_HISTORY,
                    self.ttl_ms,
                    LEASE_MS,
                    owner,
                    struct.pack(">qd", commit.time_us, commit.amount).hex(),
                ],
            )

    def claim(self, commits: Sequence[Commit]) -> dict[int, Conflict]:
        """Cluster only: claim each transaction id for its request (``SET NX``); the
        commits whose id another request holds, by position."""
        pipe = self.client.pipeline(transaction=False)
        for commit in commits:
            pipe.set(
                self.claim_key(commit.transaction_id),
                commit.fingerprint,
                nx=True,
                get=True,
                px=self.ttl_ms,
            )
        conflicts = {}
        for i, (commit, held) in enumerate(zip(commits, pipe.execute(), strict=True)):
            if held is not None and _text(held) != commit.fingerprint:
                conflicts[i] = Conflict(commit.differs_from(_text(held)))
        return conflicts

    def outcomes(self, commits: Sequence[Commit], replies: Sequence[Any]) -> list[Outcome]:
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        kinds = [_text(reply[0]) for reply in replies]
        histories = iter(
            _histories([r[3] for r, kind in zip(replies, kinds, strict=True) if kind == "new"])
        )
        out: list[Outcome] = []
        for commit, reply, kind in zip(commits, replies, kinds, strict=True):
            if kind == "new":
                times, amounts, terminals = next(histories)
                out.append(
                    Before(
                        int(_text(reply[1])),
                        times,
                        amounts,
                        terminals,
                        _parse_stats(_text(reply[2])),
                    )
                )
            elif kind == "done":
                out.append(Replayed(json.loads(reply[1])))
            elif kind == "pending":
                out.append(InFlight())
            else:
                out.append(Conflict(commit.differs_from(_text(reply[1]))))
        return out

    def commit(
        self, commits: Sequence[Commit], also: Callable[[Any], int] | None = None
    ) -> tuple[list[Outcome], list[Any]]:
        """Commit transactions (any customers, in order): one round trip on a single
        Redis, two on a cluster (the id claims, then the commits). ``also(pipe)`` may
        queue other reads on the commits' pipeline and return how many; their replies
        come back second."""
        commits = list(commits)
        conflicts = self.claim(commits) if self.cluster else {}
        todo = [c for i, c in enumerate(commits) if i not in conflicts]
        owner = os.urandom(8).hex()
        extra = 0
        kept = self._take_kept()

        def queue(pipe: Any) -> None:
            nonlocal extra
            self._queue_saves(pipe, kept)  # results kept since the last round trip
            self.queue_commits(pipe, todo, owner)
            extra = also(pipe) if also else 0

        replies = self._execute(queue)[len(kept) :]
        done = iter(self.outcomes(todo, replies[: len(todo)]))
        outcomes = [conflicts[i] if i in conflicts else next(done) for i in range(len(commits))]
        return outcomes, replies[len(todo) : len(todo) + extra]

    def keep(self, items: Iterable[tuple[Commit, dict[str, Any]]]) -> None:
        """Keep results for retries with the next round trip (the next commit's, or
        :meth:`flush` soon after): no round trip of their own on the request's path. Until
        written, a retry finds its transaction in flight and waits; if this process dies
        first, the retry finishes it after the lease, with the same features."""
        with self._kept_lock:
            self._kept.extend(items)

    def flush(self) -> None:
        """Write the results kept and not yet written."""
        kept = self._take_kept()
        if kept:
            self._check(self._execute(lambda pipe: self._queue_saves(pipe, kept)))

    def _take_kept(self) -> list[tuple[Commit, dict[str, Any]]]:
        with self._kept_lock:
            kept, self._kept = self._kept, []
        return kept

    def _queue_saves(self, pipe: Any, items: Sequence[tuple[Commit, dict[str, Any]]]) -> None:
        for commit, result in items:
            self._save.queue(
                pipe,
                [self.record_key(commit)],
                [commit.fingerprint, json.dumps(result, separators=(",", ":"))],
            )

    @staticmethod
    def _check(replies: Sequence[Any]) -> None:
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply

    def save_results(self, items: Iterable[tuple[Commit, dict[str, Any]]]) -> None:
        """Keep each committed transaction's result for its retries, now."""
        self.keep(items)
        self.flush()

    def seed(self, states: Iterable[dict[str, Any]]) -> int:
        """Write the states (rows of the offline ``customer_state`` table) of customers the
        store does not know; how many were new."""
        batch: list[tuple[list[str], list[Any]]] = []
        seeded = 0

        def flush() -> int:
            def queue(pipe: Any) -> None:
                for keys, args in batch:
                    self._seed.queue(pipe, keys, args)

            replies = self._execute(queue)
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply
            batch.clear()
            return sum(int(r) for r in replies)

        for row in states:
            times = [int(t) for t in row["history_time_us"]]
            history: list[Any] = []
            for seq, (t, a, term) in enumerate(
                zip(times, row["history_amount"], row["history_terminal_id"], strict=True)
            ):
                history += [t, _member(seq, t, float(a), str(term))]
            stats = [repr(float(row[name])) for name in STATS]
            batch.append(
                (
                    list(self.customer_keys(str(row["customer_id"]))),
                    [len(times), *stats, max(times, default=0), *history],
                )
            )
            if len(batch) == 1000:
                seeded += flush()
        return seeded + (flush() if batch else 0)

    def state_bytes(self, customer_id: str) -> int:
        """Memory the customer's state takes in Redis (``MEMORY USAGE``), records aside."""
        return sum(
            int(self.client.memory_usage(key, samples=0) or 0)
            for key in self.customer_keys(customer_id)
        )


# --- SQLite (the embedded default) -----------------------------------------------------------
_SCHEMA = """
create table if not exists customer_state (
  customer_id text primary key, seq integer not null, count real not null,
  amount_mean real not null, amount_m2 real not null, hour_sin_sum real not null,
  hour_cos_sum real not null, last_time_us integer not null);
create table if not exists customer_history (
  customer_id text not null, time_us integer not null, seq integer not null,
  amount real not null, terminal_id text not null, primary key (customer_id, time_us, seq));
create table if not exists scored_transaction (
  transaction_id text primary key, customer_id text not null, fingerprint text not null,
  seq integer not null, stats text, lease_ms integer, result text, expires_ms integer not null);
"""


class SqliteStateStore:
    """The state in a SQLite file: each commit is one ``BEGIN IMMEDIATE`` transaction, so
    processes sharing the file (workers, the stream consumer) take turns."""

    def __init__(self, path: Path, ttl_seconds: float):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.ttl_ms = int(ttl_seconds * 1000)
        self._local = threading.local()
        with self._connection() as db:
            db.executescript(_SCHEMA)

    def _connection(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            db.execute("pragma journal_mode=wal")
            db.execute("pragma synchronous=normal")
            self._local.db = db
        return db

    def commit(
        self, commits: Sequence[Commit], also: Callable[[Any], int] | None = None
    ) -> tuple[list[Outcome], list[Any]]:
        """As :meth:`RedisStateStore.commit` (``also`` is not used: nothing else is read
        from this file)."""
        db = self._connection()
        now_ms = int(time.time() * 1000)
        db.execute("begin immediate")
        try:
            out = [self._commit_one(db, commit, now_ms) for commit in commits]
            db.execute("delete from scored_transaction where expires_ms < ?", (now_ms,))
            db.execute("commit")
        except BaseException:
            db.execute("rollback")
            raise
        return out, []

    def _before(self, db: sqlite3.Connection, commit: Commit, seq: int | None) -> list[Any]:
        rows = db.execute(
            "select time_us, seq, amount, terminal_id from customer_history where customer_id = ?"
            " and time_us between ? and ? order by time_us, seq",
            (commit.customer_id, commit.time_us - f.HISTORY_US, commit.time_us),
        ).fetchall()
        return [r for r in rows if seq is None or r[1] < seq]

    def _answer(self, seq: int, stats: str, rows: list[Any]) -> Before:
        return Before(
            seq,
            np.array([r[0] for r in rows], dtype=np.int64),
            np.array([r[2] for r in rows], dtype=np.float64),
            [r[3] for r in rows],
            _parse_stats(stats),
        )

    def _commit_one(self, db: sqlite3.Connection, commit: Commit, now_ms: int) -> Outcome:
        record = db.execute(
            "select fingerprint, seq, stats, result, lease_ms from scored_transaction"
            " where transaction_id = ? and expires_ms >= ?",
            (commit.transaction_id, now_ms),
        ).fetchone()
        if record is not None:
            fingerprint, seq, stats, result, lease = record
            if fingerprint != commit.fingerprint:
                return Conflict(commit.differs_from(fingerprint))
            if result is not None:
                return Replayed(json.loads(result))
            if lease > now_ms:
                return InFlight()
            db.execute(
                "update scored_transaction set lease_ms = ? where transaction_id = ?",
                (now_ms + LEASE_MS, commit.transaction_id),
            )
            return self._answer(seq, stats, self._before(db, commit, seq))
        state = db.execute(
            "select seq, count, amount_mean, amount_m2, hour_sin_sum, hour_cos_sum, last_time_us"
            " from customer_state where customer_id = ?",
            (commit.customer_id,),
        ).fetchone()
        seq, n, mean, m2, sin, cos, last = state or (0, 0.0, 0.0, 0.0, 0.0, 0.0, commit.time_us)
        prior = _stats_text((n, mean, m2, sin, cos))
        rows = self._before(db, commit, None)
        # Welford's step, as the Redis script takes it
        x = float(commit.amount)
        count = n + 1
        delta = x - mean
        mean = mean + delta / count
        m2 = m2 + delta * delta * n / count
        (hour_sin,), (hour_cos,) = _hour_terms([commit.time_us])
        last = max(last, commit.time_us)
        db.execute(
            "insert into customer_history values (?, ?, ?, ?, ?)",
            (commit.customer_id, commit.time_us, seq, x, commit.terminal_id),
        )
        db.execute(
            "delete from customer_history where customer_id = ? and time_us < ?",
            (commit.customer_id, last - f.HISTORY_US),
        )
        db.execute(
            "delete from customer_history where customer_id = ? and rowid not in (select rowid"
            " from customer_history where customer_id = ? order by time_us desc, seq desc"
            " limit ?)",
            (commit.customer_id, commit.customer_id, f.MAX_HISTORY),
        )
        db.execute(
            "insert or replace into customer_state values (?, ?, ?, ?, ?, ?, ?, ?)",
            (commit.customer_id, seq + 1, count, mean, m2, sin + hour_sin, cos + hour_cos, last),
        )
        db.execute(
            "insert or replace into scored_transaction values (?, ?, ?, ?, ?, ?, null, ?)",
            (
                commit.transaction_id,
                commit.customer_id,
                commit.fingerprint,
                seq,
                prior,
                now_ms + LEASE_MS,
                now_ms + self.ttl_ms,
            ),
        )
        return self._answer(seq, prior, rows)

    def keep(self, items: Iterable[tuple[Commit, dict[str, Any]]]) -> None:
        """As :meth:`save_results`: a local file costs no round trip."""
        self.save_results(items)

    def flush(self) -> None:
        """Nothing waits: :meth:`keep` writes at once."""

    def save_results(self, items: Iterable[tuple[Commit, dict[str, Any]]]) -> None:
        db = self._connection()
        db.execute("begin immediate")
        try:
            for commit, result in items:
                db.execute(
                    "update scored_transaction set result = ?, stats = null, lease_ms = null"
                    " where transaction_id = ? and fingerprint = ? and result is null",
                    (
                        json.dumps(result, separators=(",", ":")),
                        commit.transaction_id,
                        commit.fingerprint,
                    ),
                )
            db.execute("commit")
        except BaseException:
            db.execute("rollback")
            raise

    def seed(self, states: Iterable[dict[str, Any]]) -> int:
        db = self._connection()
        seeded = 0
        db.execute("begin immediate")
        try:
            for row in states:
                customer = str(row["customer_id"])
                times = [int(t) for t in row["history_time_us"]]
                stats = tuple(float(row[name]) for name in STATS)
                inserted = db.execute(
                    "insert or ignore into customer_state values (?, ?, ?, ?, ?, ?, ?, ?)",
                    (customer, len(times), *stats, max(times, default=0)),
                ).rowcount
                if inserted:
                    seeded += 1
                    db.executemany(
                        "insert into customer_history values (?, ?, ?, ?, ?)",
                        [
                            (customer, t, seq, float(a), str(term))
                            for seq, (t, a, term) in enumerate(
                                zip(
                                    times,
                                    row["history_amount"],
                                    row["history_terminal_id"],
                                    strict=True,
                                )
                            )
                        ],
                    )
            db.execute("commit")
        except BaseException:
            db.execute("rollback")
            raise
        return seeded


StateStore = RedisStateStore | SqliteStateStore


def state_store(settings: Settings, client: Any | None = None) -> StateStore:
    """The real-time state store the settings name: Redis (or a Redis Cluster) with the
    Redis online store, else a SQLite file under the data directory."""
    ttl = settings.resolved_idempotency_ttl_seconds
    if settings.online_store == "redis":
        return RedisStateStore(client or redis_client(settings), settings.redis_key_prefix, ttl)
    return SqliteStateStore(settings.data_dir / "online" / "state.db", ttl)
