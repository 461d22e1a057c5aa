"""Streaming scoring: a Redis Streams consumer that scores transaction events in
micro-batches through the scoring core the HTTP API uses (same features, same @champion,
same real-time customer state, same prediction log).

    fraudops stream                                   # group "scorers", one consumer
    fraudops stream --consumer scorer-2 --batch-size 500 --max-wait-ms 20
    redis-cli XADD fraudops:transactions '*' transaction \\
      '{"transaction_id": "t1", "timestamp": "2026-01-05T10:00:00Z", "customer_id": "c1",
        "terminal_id": "t9", "amount": 12.5}'

Streams (keys prefixed with ``FRAUDOPS_REDIS_KEY_PREFIX``, so ``fraudops:transactions``):

- ``transactions``: events in; field ``transaction`` holds one transaction of the data
  contract as JSON.
- ``scores``: one entry per scored event: ``event_id`` (the input entry id),
  ``transaction_id``, ``fraud_probability``, ``decision``, ``reasons`` (JSON), ...
- ``alerts``: the same fields, for ``block`` decisions only.
- ``deadletter``: events that failed validation: ``event_id``, ``reason``, ``fields``
  (the bad field names, as the API's 400 names them), ``errors`` (JSON) and ``payload``.

Delivery. Events are read with a consumer group, so several consumers share the load. An
event is acknowledged in the same Lua script (atomic) that adds its result (and alert),
and only once its prediction record is in the database or fsynced in the spool
(``PredictionLog.write_now`` returned). A batch's records are written by a second thread
while the next batch is scored; the batch is published and acknowledged after that (or
at once when no events wait). A consumer that dies leaves its events pending; another
claims them with XAUTOCLAIM once they are idle for ``claim_idle_ms``. The
prediction id is ``stream:<entry id>``, so a re-scored event is logged once; and before
scoring a claimed event the consumer looks its prediction id up in the log: an event that
was scored and logged but not acknowledged is published from its logged record instead
of being scored again, so the customer's real-time state does not count it twice.

Ordering. Features are computed as of each event's timestamp (event time). Each event's
transaction is committed to its customer's real-time state exactly once, by one atomic
step in Redis (:mod:`fraudops.features.realtime`), whichever consumer or HTTP worker gets there
first: consumers need no lease. A redelivered event, or one sent over HTTP too, gets its
first result back; one still being scored elsewhere waits for the next batch; one whose
``transaction_id`` was used with other values is dead-lettered.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import redis
import sqlalchemy as sa
from pydantic import ValidationError

from fraudops.core.contract import TRANSACTION_FIELD, Transaction
from fraudops.core.settings import Settings

if TYPE_CHECKING:  # the scoring core imports Feast and MLflow: only when consuming
    from fraudops.serving.scoring import ScoreResult, ScoringCore

log = logging.getLogger(__name__)

DEFAULT_GROUP = "scorers"
DEFAULT_STREAM = "transactions"
SOURCE = "stream"
# Failures of Redis, the network or the database: retry the batch, never dead-letter it.
INFRASTRUCTURE_ERRORS = (redis.ConnectionError, redis.TimeoutError, OSError, sa.exc.SQLAlchemyError)

SCORE_FIELDS = (
    "event_id",
    "transaction_id",
    "customer_id",
    "terminal_id",
    "amount",
    "event_timestamp",
    "fraud_probability",
    "decision",
    "reasons",
    "model_version",
    "degraded",
    "latency_ms",
)
DEADLETTER_FIELDS = ("event_id", "reason", "fields", "errors", "payload")


def _lua_names(names: Sequence[str]) -> str:
    return "{" + ", ".join(f"'{name}'" for name in names) + "}"


# A batch's results, alerts and dead letters and its acknowledgement, in one script: atomic
# like MULTI/EXEC, with one reply instead of one per command.
# KEYS: scores, alerts, deadletter, transactions.
# ARGV: max length ('' for none), group, consumer, number of results, number of dead
# letters, each result's SCORE_FIELDS values, each dead letter's DEADLETTER_FIELDS values,
# then the entry ids to acknowledge.
_PUBLISH = (
    """
local score_fields = SCORE_FIELDS
local dead_fields = DEADLETTER_FIELDS
local function add(key, names, at)
  local args = {key}
  if ARGV[1] ~= '' then
    args[2] = 'MAXLEN'; args[3] = '~'; args[4] = ARGV[1]
  end
  args[#args + 1] = '*'
  for k, name in ipairs(names) do
    args[#args + 1] = name
    args[#args + 1] = ARGV[at + k - 1]
  end
  redis.call('XADD', unpack(args))
end
local at = 6
for _ = 1, tonumber(ARGV[4]) do
  add(KEYS[1], score_fields, at)
  if ARGV[at + DECISION] == 'block' then add(KEYS[2], score_fields, at) end
  at = at + #score_fields
end
for _ = 1, tonumber(ARGV[5]) do
  add(KEYS[3], dead_fields, at)
  at = at + #dead_fields
end
local acked = 0
for first = at, #ARGV, 1000 do
  local ids = {}
  for k = first, math.min(first + 999, #ARGV) do ids[#ids + 1] = ARGV[k] end
  acked = acked + redis.call('XACK', KEYS[4], ARGV[2], unpack(ids))
end
return acked
""".replace("SCORE_FIELDS", _lua_names(SCORE_FIELDS))
    .replace("DEADLETTER_FIELDS", _lua_names(DEADLETTER_FIELDS))
    .replace("DECISION", str(SCORE_FIELDS.index("decision")))
)


# --- names and wire format ---------------------------------------------------------------
@dataclass(frozen=True)
class StreamNames:
    """The Redis keys of one deployment (``settings.redis_key_prefix``)."""

    prefix: str
    transactions: str
    scores: str
    alerts: str
    deadletter: str

    @classmethod
    def under(cls, prefix: str, transactions: str = DEFAULT_STREAM) -> StreamNames:
        p = prefix
        return cls(p, f"{p}:{transactions}", f"{p}:scores", f"{p}:alerts", f"{p}:deadletter")

    @classmethod
    def from_settings(cls, settings: Settings, transactions: str = DEFAULT_STREAM) -> StreamNames:
        """On a Redis Cluster the prefix is a hash tag (``{fraudops}:transactions``): the
        streams a batch's script writes must share a slot."""
        prefix = settings.redis_key_prefix
        if settings.redis_mode == "cluster":
            prefix = "{" + prefix + "}"
        return cls.under(prefix, transactions)


def prediction_id(entry_id: str) -> str:
    """The prediction log's id for a stream entry: the same on every delivery."""
    return f"{SOURCE}:{entry_id}"


class PoisonEvent(ValueError):
    """An event that can never be scored: it goes to the dead-letter stream."""

    def __init__(self, reason: str, errors: list[dict[str, Any]]):
        super().__init__(reason)
        self.reason = reason
        self.errors = errors

    @property
    def fields(self) -> list[str]:
        return list(dict.fromkeys(str(e["loc"][0]) for e in self.errors if e["loc"]))


def parse_event(fields: Mapping[str, str]) -> Transaction:
    """The transaction of an entry, or :class:`PoisonEvent` naming the bad fields."""
    raw = fields.get(TRANSACTION_FIELD)
    if raw is None:
        got = ", ".join(sorted(fields)) or "none"
        raise PoisonEvent(
            f"{TRANSACTION_FIELD}: missing; expected a field '{TRANSACTION_FIELD}' holding the "
            f"transaction as JSON (entry fields: {got})",
            [{"loc": [TRANSACTION_FIELD], "msg": "Field required", "type": "missing"}],
        )
    try:
        return Transaction.model_validate_json(raw)
    except ValidationError as exc:
        errors = [
            {"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]}
            for e in exc.errors(include_url=False)
        ]
        reason = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'transaction'}: {e['msg']}" for e in errors
        )
        raise PoisonEvent(reason, errors) from None


def score_values(event_id: str, tx: Transaction, result: ScoreResult) -> tuple[str, ...]:
    """The values of a result's entry in the ``scores`` (and ``alerts``) stream, in
    ``SCORE_FIELDS`` order."""
    return (
        event_id,
        result.transaction_id,
        tx.customer_id,
        tx.terminal_id,
        repr(tx.amount),
        tx.timestamp.isoformat(),
        repr(result.fraud_probability),
        result.decision,
        json.dumps(result.reasons, separators=(",", ":")) if result.reasons else "[]",
        result.model_version,
        "true" if result.degraded else "false",
        f"{result.latency_ms:.3f}",
    )


def deadletter_fields(
    event_id: str, fields: Mapping[str, str], poison: PoisonEvent
) -> dict[Any, Any]:
    return {
        "event_id": event_id,
        "reason": poison.reason,
        "fields": ",".join(poison.fields),
        "errors": json.dumps(poison.errors, separators=(",", ":"), default=str),
        "payload": fields.get(TRANSACTION_FIELD, json.dumps(dict(fields), default=str))[:10_000],
    }


# --- the consumer -----------------------------------------------------------------------
@dataclass
class Event:
    entry_id: str
    fields: dict[str, str]
    redelivered: bool  # read again from a pending list: it may be scored already
    transaction: Transaction | None = None  # once parsed

    @property
    def tx(self) -> Transaction:
        if self.transaction is None:
            raise RuntimeError(f"event {self.entry_id} was not parsed")
        return self.transaction


@dataclass
class ConsumerStats:
    read: int = 0
    scored: int = 0
    from_log: int = 0  # claimed events already scored and logged: published, not re-scored
    alerts: int = 0
    deadlettered: int = 0
    claimed: int = 0
    deferred: int = 0  # waits while another scorer finishes the same transaction
    deleted: int = 0  # pending entries trimmed from the stream before we read them
    batches: int = 0
    errors: int = 0
    started: float = field(default_factory=time.monotonic)

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "started"}
        out["seconds"] = round(time.monotonic() - self.started, 3)
        return out


class ScriptSender:
    """Runs a Lua script on a connection of its own without waiting for its reply, which
    is read before the next run or by :meth:`wait`: Redis runs the script (a batch's
    results and acknowledgement, ~500 XADDs) while the consumer scores the next batch."""

    def __init__(self, client: redis.Redis, script: str):
        self.client = client
        self.script = client.register_script(script)
        self._connection: Any = None
        self._sent: tuple[list[Any], list[Any]] | None = None

    def send(self, keys: list[Any], args: list[Any]) -> None:
        self.wait()
        if self._connection is None:
            self._connection = self.client.connection_pool.get_connection()
        try:
            self._connection.send_command("EVALSHA", self.script.sha, len(keys), *keys, *args)
        except BaseException:
            self._drop()
            raise
        self._sent = (keys, args)

    def wait(self) -> None:
        """The last run's reply: returns once Redis ran it, raises if it failed."""
        if self._sent is None:
            return
        keys, args = self._sent
        self._sent = None
        try:
            self._connection.read_response()
        except redis.exceptions.NoScriptError:  # Redis restarted or flushed its scripts
            self.script(keys=keys, args=args)  # loads it and runs it, now
        except BaseException:
            self._drop()
            raise

    def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.disconnect()
            self.client.connection_pool.release(connection)


@dataclass
class Unpublished:
    """A scored batch, published and acknowledged once ``log_write`` (its records) is done."""

    log_write: Future[None] | None
    done: list[Event]
    results: dict[str, ScoreResult]
    poison: list[tuple[Event, PoisonEvent]]
    deleted: list[Event]

    def events(self) -> list[Event]:
        return [*self.done, *(event for event, _ in self.poison), *self.deleted]


class StreamConsumer:
    """One member of a consumer group. :meth:`run` loops until ``stop`` is set; each
    :meth:`step` handles one micro-batch (claimed, pending or new events)."""

    def __init__(
        self,
        core: ScoringCore,
        client: redis.Redis,
        names: StreamNames,
        *,
        group: str = DEFAULT_GROUP,
        consumer: str | None = None,
        batch_size: int = 500,
        max_wait_ms: int = 20,
        block_ms: int = 500,
        claim_idle_ms: int = 30_000,
        max_len: int | None = 1_000_000,
    ):
        if core.prediction_log is None:
            raise ValueError("the stream consumer needs a prediction log (ack after logging)")
        self.core = core
        self.prediction_log: Any = core.prediction_log
        self.client: Any = client  # redis-py's types make every reply possibly awaitable
        self.names = names
        self.group = group
        self.consumer = consumer or default_consumer_name()
        self.batch_size = batch_size
        self.max_wait_ms = max_wait_ms
        self.block_ms = block_ms
        self.claim_idle_ms = claim_idle_ms
        self.max_len = max_len
        self.stats = ConsumerStats()
        self._publisher = ScriptSender(client, _PUBLISH)
        self._deferred: list[Event] = []
        self._shadow_rows: list[dict[str, Any]] = []  # the batch's, with its records
        # a scored batch whose records are being written; one thread writes them
        self._unpublished: Unpublished | None = None
        self._log_writer = ThreadPoolExecutor(1, thread_name_prefix="stream-log")
        self._read_own_pending = True  # first our own pending list (a restart), then new
        self._pending_cursor = "0"
        self._next_claim = 0.0
        self._claim_cursor = "0-0"

    # --- set-up -------------------------------------------------------------------------
    def ensure_group(self) -> None:
        """Create the group (and the stream) if needed; a new group reads from the start."""
        try:
            self.client.xgroup_create(self.names.transactions, self.group, id="0", mkstream=True)
            log.info("created consumer group %s on %s", self.group, self.names.transactions)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    # --- loop ---------------------------------------------------------------------------
    def run(self, stop: threading.Event, report_every: float = 10.0) -> ConsumerStats:
        """Consume until ``stop`` is set; the batch in hand is finished first (drain)."""
        self.ensure_group()
        log.info(
            "consumer %s of group %s reading %s (batch %d, wait %d ms, model version %s)",
            self.consumer,
            self.group,
            self.names.transactions,
            self.batch_size,
            self.max_wait_ms,
            self.core.current.version,
        )
        backoff = 0.0
        last_report = time.monotonic()
        while not stop.is_set():
            try:
                self.step()
                backoff = 0.0
            except INFRASTRUCTURE_ERRORS as exc:
                # Nothing was acknowledged: retry from our pending list once things answer
                # again (events scored meanwhile are found in the log, not scored again).
                self.stats.errors += 1
                backoff = min(max(backoff * 2, 0.5), 10.0)
                log.warning("stream step failed, retrying in %.1f s: %s", backoff, _short(exc))
                self._forget_previous()
                self._deferred.clear()
                self._read_own_pending = True
                stop.wait(backoff)
            except redis.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                log.warning("the stream or the group was deleted: creating them again")
                self.ensure_group()
            if time.monotonic() - last_report >= report_every:
                last_report = time.monotonic()
                self._report()
        try:
            self._publish_previous()
            self._publisher.wait()
        except INFRASTRUCTURE_ERRORS as exc:
            log.warning("the last batch stays pending for the group: %s", _short(exc))
            self._forget_previous()
        if self._deferred:
            log.info("%d deferred events stay pending for the group", len(self._deferred))
        self._report()
        return self.stats

    def step(self) -> int:
        """Read and handle one micro-batch; returns the number of events handled."""
        batch = self._claim() or self._read()
        if not batch:
            self._publish_previous()
            self._publisher.wait()
            return 0
        self.stats.batches += 1
        return self.process(batch)

    # --- reading ------------------------------------------------------------------------
    def _claim(self) -> list[Event]:
        """Pending events of other consumers idle for ``claim_idle_ms`` (they died)."""
        now = time.monotonic()
        if now < self._next_claim:
            return []
        self._next_claim = now + min(self.claim_idle_ms / 2000, 5.0)
        self._publisher.wait()  # our last results are acknowledged: never claimed back
        cursor, entries, deleted = self.client.xautoclaim(
            self.names.transactions,
            self.group,
            self.consumer,
            self.claim_idle_ms,
            start_id=self._claim_cursor,
            count=self.batch_size,
        )[:3]
        self._claim_cursor = cursor
        if cursor != "0-0":  # more to scan: come back at the next step
            self._next_claim = now
        self.stats.deleted += len(deleted)
        if not entries:
            return []
        self.stats.claimed += len(entries)
        log.info("claimed %d pending events idle for over %d ms", len(entries), self.claim_idle_ms)
        deferred = self._take_deferred()
        unpublished = self._unpublished.events() if self._unpublished else []
        return [*deferred, *self._events(entries, redelivered=True, skip=[*deferred, *unpublished])]

    def _read(self) -> list[Event]:
        deferred = self._take_deferred()
        if self._read_own_pending:  # our pending list, after the last entry seen
            self._publish_previous()  # (which holds the batch in hand until it is published)
            self._publisher.wait()
            entries = self._xreadgroup(self._pending_cursor, self.batch_size, None)
            if entries:
                self._pending_cursor = entries[-1][0]
                return [*deferred, *self._events(entries, redelivered=True, skip=deferred)]
            self._read_own_pending = False
            self._pending_cursor = "0"
        room = self.batch_size - len(deferred)
        if room <= 0:
            time.sleep(0.01)  # everything in hand waits for others to finish it
            return deferred
        # Block for the first event (briefly when we already hold deferred ones), then
        # top the batch up for at most max_wait_ms.
        if self._unpublished is not None:  # take what is there: a scored batch waits
            return [*deferred, *self._events(self._xreadgroup(">", room, None), False)]
        first_block = 10 if deferred else self.block_ms
        entries = self._xreadgroup(">", room, first_block)
        deadline = time.monotonic() + self.max_wait_ms / 1000
        while entries and len(entries) < room:
            left_ms = int((deadline - time.monotonic()) * 1000)
            if left_ms <= 0:
                break
            more = self._xreadgroup(">", room - len(entries), left_ms)
            if not more:
                break
            entries.extend(more)
        return [*deferred, *self._events(entries, redelivered=False)]

    def _xreadgroup(self, last_id: str, count: int, block: int | None) -> list:
        reply = self.client.xreadgroup(
            self.group,
            self.consumer,
            {self.names.transactions: last_id},
            count=count,
            block=block,
        )
        return list(reply[0][1]) if reply else []

    def _events(
        self, entries: Sequence, redelivered: bool, skip: Sequence[Event] = ()
    ) -> list[Event]:
        held = {e.entry_id for e in skip}  # already in hand (deferred): not twice in a batch
        events = [
            Event(entry_id, dict(fields or {}), redelivered)
            for entry_id, fields in entries
            if entry_id not in held
        ]
        self.stats.read += len(events)
        return events

    def _take_deferred(self) -> list[Event]:
        deferred, self._deferred = self._deferred, []
        return deferred

    # --- one batch ----------------------------------------------------------------------
    def process(self, batch: list[Event]) -> int:
        """Score, publish and acknowledge one batch (see the module docstring)."""
        poison: list[tuple[Event, PoisonEvent]] = []
        deleted: list[Event] = []
        valid: list[Event] = []
        for event in batch:
            if not event.fields:  # a pending entry deleted from the stream: nothing to score
                deleted.append(event)
                continue
            if event.transaction is None:
                try:
                    event.transaction = parse_event(event.fields)
                except PoisonEvent as exc:
                    poison.append((event, exc))
                    continue
            valid.append(event)

        logged = self._already_logged([e for e in valid if e.redelivered])
        to_score = [e for e in valid if e.entry_id not in logged]
        records: list[dict[str, Any]] = []
        deferred: list[Event] = []
        self._shadow_rows = []
        results = self._score(to_score, poison, records, deferred)
        results.update(logged)

        done = [e for e in valid if e.entry_id in results]
        log_write = (
            self._log_writer.submit(self._write_logs, records, self._shadow_rows)
            if (records)
            else None
        )
        # the previous batch: its records are durable by now (they were written while this
        # batch was scored), so it is published
        self._publish_previous()
        self._unpublished = Unpublished(log_write, done, results, poison, deleted)
        if deferred:  # still ours: reset their idle time so no one claims them meanwhile
            self.client.xclaim(
                self.names.transactions,
                self.group,
                self.consumer,
                0,
                [e.entry_id for e in deferred],
                justid=True,
            )
        self._deferred = deferred
        self.stats.scored += len(done) - len(logged)
        self.stats.from_log += len(logged)
        self.stats.alerts += sum(1 for e in done if results[e.entry_id].decision == "block")
        self.stats.deadlettered += len(poison)
        self.stats.deferred += len(deferred)
        self.stats.deleted += len(deleted)
        return len(done) + len(poison) + len(deleted)

    def _write_logs(self, records: list[dict[str, Any]], shadow: list[dict[str, Any]]) -> None:
        """The batch's prediction records, then its shadow results (FRAUDOPS_SHADOW), both
        durable before the batch is acknowledged. A shadow write that fails is logged and
        holds nothing up: the answers are the champion's."""
        self.prediction_log.write_now(records)
        if shadow and self.core.shadow_log is not None:
            try:
                self.core.shadow_log.write_now(shadow)
            except Exception as exc:
                log.warning("%d shadow results not logged: %s", len(shadow), _short(exc))

    def _already_logged(self, events: list[Event]) -> dict[str, ScoreResult]:
        """Results of redelivered events whose prediction is in the log already."""
        if not events:
            return {}
        from fraudops.core.db import predictions
        from fraudops.serving.scoring import ScoreResult

        ids = {prediction_id(e.entry_id): e.entry_id for e in events}
        p = predictions.c
        query = sa.select(
            p.prediction_id,
            p.transaction_id,
            p.fraud_probability,
            p.decision,
            p.reasons,
            p.model_version,
            p.degraded,
            p.latency_ms,
        ).where(p.prediction_id.in_(list(ids)))
        try:
            with self.prediction_log.engine.connect() as conn:
                rows = conn.execute(query).all()
        except sa.exc.SQLAlchemyError as exc:
            # Re-scoring is still safe for the log (ids are idempotent); only the customer
            # state may count a twice-scored event twice.
            log.warning("cannot check the prediction log for redelivered events: %s", _short(exc))
            return {}
        found = {
            ids[row.prediction_id]: ScoreResult(
                row.transaction_id,
                float(row.fraud_probability),
                row.decision,
                list(row.reasons or []),
                row.model_version,
                bool(row.degraded),
                float(row.latency_ms),
            )
            for row in rows
        }
        if found:
            log.info(
                "%d redelivered events were scored before: publishing their logged results",
                len(found),
            )
        return found

    def _publish_previous(self) -> None:
        """Publish and acknowledge the batch scored before, once its records are durable
        (in the database or fsynced in the spool)."""
        batch, self._unpublished = self._unpublished, None
        if batch is None:
            return
        if batch.log_write is not None:
            batch.log_write.result()  # raises if the records could not be made durable
        self._publish(batch.done, batch.results, batch.poison, batch.deleted)

    def _forget_previous(self) -> None:
        """After a failure: the batch scored before stays pending in the group, to be read
        again (and published from the log); its log write is waited for, not lost."""
        batch, self._unpublished = self._unpublished, None
        if batch is not None and batch.log_write is not None:
            try:
                batch.log_write.result()
            except Exception as exc:  # its events are scored again from the pending list
                log.warning("the previous batch's records were not logged: %s", _short(exc))
        try:
            self._publisher.wait()
        except Exception as exc:  # not acknowledged: read again from the pending list
            log.warning("the last results sent were not published: %s", _short(exc))

    def _score(
        self,
        events: list[Event],
        poison: list[tuple[Event, PoisonEvent]],
        records: list[dict[str, Any]],
        deferred: list[Event],
    ) -> dict[str, ScoreResult]:
        """Results by entry id; their prediction records are appended to ``records``. An
        event whose transaction id is being scored elsewhere right now (the same event
        delivered twice, or sent over HTTP too) waits in ``deferred`` for the next batch;
        one whose id was scored with other values is dead-lettered. When a batch fails for
        a reason other than infrastructure, its events are scored one by one and those
        that still fail are dead-lettered; if every one fails, it is a bug or a broken
        dependency, not bad data: raise."""
        if not events:
            return {}
        try:
            return self._score_events(events, records, poison, deferred)
        except INFRASTRUCTURE_ERRORS:
            raise
        except Exception as exc:
            if len(events) > 1:
                log.warning(
                    "scoring a batch of %d failed (%s): scoring its events one by one",
                    len(events),
                    _short(exc),
                )
            results: dict[str, ScoreResult] = {}
            waiting = len(deferred)
            failed: list[tuple[Event, Exception]] = []
            for event in events:
                try:
                    results.update(self._score_events([event], records, poison, deferred))
                except INFRASTRUCTURE_ERRORS:
                    raise
                except Exception as error:
                    failed.append((event, error))
            if len(events) > 1 and not results and len(deferred) == waiting:
                raise
            for event, problem in failed:
                log.error("scoring event %s failed, dead-lettering it: %r", event.entry_id, problem)
                reason = f"scoring failed: {type(problem).__name__}: {str(problem)[:500]}"
                poison.append((event, PoisonEvent(reason, [])))
            return results

    def _score_events(
        self,
        events: list[Event],
        records: list[dict[str, Any]],
        poison: list[tuple[Event, PoisonEvent]],
        deferred: list[Event],
    ) -> dict[str, ScoreResult]:
        from fraudops.serving.scoring import IdempotencyConflict, ScoreResult, StillScoring

        outcomes = self.core.score(
            [e.tx for e in events],
            source=SOURCE,
            prediction_ids=[prediction_id(e.entry_id) for e in events],
            log_via=records.extend,
            shadow_via=self._shadow_rows.extend,
        )
        results: dict[str, ScoreResult] = {}
        for event, outcome in zip(events, outcomes, strict=True):
            if isinstance(outcome, ScoreResult):
                results[event.entry_id] = outcome
            elif isinstance(outcome, StillScoring):
                deferred.append(event)
            elif isinstance(outcome, IdempotencyConflict):
                errors = [{"loc": [name], "msg": str(outcome)} for name in outcome.fields]
                poison.append((event, PoisonEvent(str(outcome), errors)))
        return results

    def _publish(
        self,
        done: list[Event],
        results: dict[str, ScoreResult],
        poison: list[tuple[Event, PoisonEvent]],
        deleted: list[Event],
    ) -> None:
        """Results, alerts and dead letters and the acknowledgement, in one script
        (atomic): an event is acknowledged exactly when its result is in the stream."""
        values: list[Any] = []
        for event in done:
            values.extend(score_values(event.entry_id, event.tx, results[event.entry_id]))
        for event, reason in poison:
            dead = deadletter_fields(event.entry_id, event.fields, reason)
            values.extend(dead[name] for name in DEADLETTER_FIELDS)
            log.warning("dead-lettered event %s: %s", event.entry_id, reason.reason)
        acked = [e.entry_id for e in (*done, *(p[0] for p in poison), *deleted)]
        if not acked:
            return
        n = self.names
        self._publisher.send(
            keys=[
                n.scores,
                n.alerts,
                n.deadletter,
                n.transactions,
            ],
            args=[
                "" if self.max_len is None else self.max_len,
                self.group,
                self.consumer,
                len(done),
                len(poison),
                *values,
                *acked,
            ],
        )

    # --- reporting ------------------------------------------------------------------------
    def lag(self) -> int | None:
        """Events in the stream not yet read by the group (Redis >= 7)."""
        try:
            for group in self.client.xinfo_groups(self.names.transactions):
                if group["name"] == self.group:
                    return group.get("lag")
        except redis.RedisError:
            return None
        return None

    def _report(self) -> None:
        s = self.stats
        elapsed = max(time.monotonic() - s.started, 1e-9)
        log.info(
            "scored %d (%.0f/s), alerts %d, dead-lettered %d, claimed %d, from log %d, "
            "group lag %s, model version %s",
            s.scored,
            s.scored / elapsed,
            s.alerts,
            s.deadlettered,
            s.claimed,
            s.from_log,
            self.lag(),
            self.core.current.version,
        )


def default_consumer_name() -> str:
    """Unique per process; stable for a container (pid 1) restarted under one hostname."""
    return f"{socket.gethostname()}-{os.getpid()}"


def _short(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:200]


# --- entry point ------------------------------------------------------------------------
def run_consumer(
    settings: Settings,
    stop: threading.Event,
    *,
    stream: str = DEFAULT_STREAM,
    group: str = DEFAULT_GROUP,
    consumer: str | None = None,
    batch_size: int = 500,
    max_wait_ms: int = 20,
    claim_idle_ms: int = 30_000,
    max_len: int | None = 1_000_000,
    freeze: bool = False,
) -> ConsumerStats:
    """Build the scoring core (loads @champion, follows it), consume until ``stop``, then
    close the prediction log (drains it). ``freeze``: the process is only this consumer
    (the CLI), so start-up objects can leave the garbage collector's reach."""
    from fraudops.serving.factory import open_scorer
    from fraudops.serving.scoring import freeze_startup_heap

    consumer = consumer or default_consumer_name()
    # One spool per consumer name: a restarted consumer of the same name replays its own.
    scorer = open_scorer(settings, f"stream-{_safe(consumer)}")
    core = scorer.core
    names = StreamNames.from_settings(settings, stream)
    client = None
    try:
        client = stream_client(settings, names)  # if this fails, the scorer still closes
        if freeze:
            freeze_startup_heap()
        core.follow_champion()
        worker = StreamConsumer(
            core,
            client,
            names,
            group=group,
            consumer=consumer,
            batch_size=batch_size,
            max_wait_ms=max_wait_ms,
            claim_idle_ms=claim_idle_ms,
            max_len=max_len,
        )
        return worker.run(stop)
    finally:
        scorer.close()
        if client is not None:
            client.close()


def stream_client(settings: Settings, names: StreamNames) -> redis.Redis:
    """A client of the Redis that holds the streams: on a cluster, of the node that serves
    their slot (found through the cluster, which also tells the node's address)."""
    if settings.redis_mode != "cluster":
        return redis.Redis.from_url(settings.redis_url, decode_responses=True)
    from redis.cluster import RedisCluster

    cluster = RedisCluster.from_url(settings.redis_url, decode_responses=True)
    node = cluster.get_node_from_key(names.transactions)
    client = cluster.get_redis_connection(node)
    if client is None:
        raise redis.ConnectionError(f"no connection to {node.name}, which holds the streams")
    return client


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
