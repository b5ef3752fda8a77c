"""The subscription registry and the per-connection state of each topic.

``SubscriptionRegistry`` holds what the caller wants (replayed after every
reconnect) and the data age of each topic, which outlives connections.
``LinkTopics`` holds the state of each topic on one connection:

    pending ──ack──▶ acked ──first Data──▶ live ──silent > stale_after──▶ stale
       │                                    ▲                               │
       └──rejected / no ack──▶ failed ──retry with backoff──┘   resubscribe once, then reconnect

An event-driven topic (``stale_after_seconds`` None, e.g. a private position
stream that is silent until a position changes) is live as soon as it is
acked: requiring a first message would keep it unhealthy forever. Data for a
registered topic makes it live in any state, since data is the best proof.
``PendingAcks`` matches acks to outstanding requests.
"""

from __future__ import annotations

import asyncio
import enum
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from agent.transport.ws_spec import OutgoingRequest, SubscribeAck


class SubState(str, enum.Enum):
    """State of one topic on the current connection."""

    PENDING = "pending"
    ACKED = "acked"
    LIVE = "live"
    STALE = "stale"
    FAILED = "failed"


@dataclass
class TopicRecord:
    """A topic the caller wants, with the times of its latest data message."""

    topic: str
    added_mono: float
    last_data_mono: float | None = None
    last_data_wall_ms: int | None = None

    def data_age_seconds(self, now_mono: float) -> float:
        """Seconds since the latest data message, or since the topic was added when none came yet."""
        return now_mono - (self.last_data_mono if self.last_data_mono is not None else self.added_mono)


class SubscriptionRegistry:
    """Topics to subscribe on every connection, in the order they were added."""

    def __init__(self) -> None:
        self._records: dict[str, TopicRecord] = {}

    def __contains__(self, topic: object) -> bool:
        return topic in self._records

    def __len__(self) -> int:
        return len(self._records)

    def topics(self) -> list[str]:
        """The registered topics."""
        return list(self._records)

    def add(self, topics: Iterable[str], now_mono: float) -> list[str]:
        """Register topics; returns those that were not registered yet."""
        new = [t for t in dict.fromkeys(topics) if t not in self._records]
        for topic in new:
            self._records[topic] = TopicRecord(topic, now_mono)
        return new

    def remove(self, topics: Iterable[str]) -> list[str]:
        """Forget topics; returns those that were registered."""
        return [t for t in dict.fromkeys(topics) if self._records.pop(t, None) is not None]

    def record_data(self, topic: str, now_mono: float, wall_ms: int) -> None:
        record = self._records.get(topic)
        if record is not None:
            record.last_data_mono = now_mono
            record.last_data_wall_ms = wall_ms

    def record(self, topic: str) -> TopicRecord | None:
        return self._records.get(topic)

    def records(self) -> list[TopicRecord]:
        return list(self._records.values())


@dataclass
class TopicState:
    """One topic on one connection. ``window_start_mono`` starts its current silence window."""

    topic: str
    stale_after_seconds: float | None
    state: SubState = SubState.PENDING
    window_start_mono: float = 0.0
    last_data_mono: float | None = None
    resubscribed: bool = False
    failures: int = 0
    retry_at_mono: float | None = None
    last_error: str | None = None

    @property
    def event_driven(self) -> bool:
        return self.stale_after_seconds is None


class LinkTopics:
    """State of every topic on one connection, and its transitions."""

    def __init__(self, stale_after: Callable[[str], float | None],
                 retry_delay: Callable[[int], float]) -> None:
        self._stale_after = stale_after
        self._retry_delay = retry_delay  # failures (1-based) -> seconds
        self.states: dict[str, TopicState] = {}

    def __contains__(self, topic: object) -> bool:
        return topic in self.states

    def add(self, topics: Iterable[str], now: float) -> list[str]:
        """Track topics as pending; returns those not tracked before."""
        new = [t for t in dict.fromkeys(topics) if t not in self.states]
        for topic in new:
            self.states[topic] = TopicState(topic, self._stale_after(topic), window_start_mono=now)
        return new

    def remove(self, topics: Iterable[str]) -> None:
        for topic in topics:
            self.states.pop(topic, None)

    def _acked(self, st: TopicState, now: float) -> None:
        # A stale topic stays stale until data proves the resubscribe worked.
        if st.state not in (SubState.LIVE, SubState.STALE):
            st.state = SubState.LIVE if st.event_driven else SubState.ACKED
        st.window_start_mono = now
        st.retry_at_mono = None
        st.last_error = None

    def on_ack(self, topics: Sequence[str], ack: SubscribeAck | None, now: float) -> None:
        """Apply the answer to a subscribe request (None: no ack in time)."""
        failed = set(ack.failed_topics) if ack is not None and ack.ok else set(topics)
        reason = "ack_timeout" if ack is None else (ack.reason or "rejected")
        for topic in topics:
            st = self.states.get(topic)
            if st is None:
                continue  # unsubscribed meanwhile
            if topic in failed:
                if st.state is SubState.LIVE and st.last_data_mono is not None:
                    st.last_error = reason  # data already proved the subscription; silence would show it
                    continue
                st.failures += 1
                st.state = SubState.FAILED
                st.last_error = reason
                st.retry_at_mono = now + self._retry_delay(st.failures)
            else:
                self._acked(st, now)

    def on_sent_without_ack(self, topics: Sequence[str], now: float) -> None:
        for topic in topics:
            st = self.states.get(topic)
            if st is not None:
                self._acked(st, now)

    def on_data(self, topic: str, now: float) -> bool:
        """Record data; returns False for a topic not tracked on this connection."""
        st = self.states.get(topic)
        if st is None:
            return False
        st.state = SubState.LIVE
        st.last_data_mono = now
        st.window_start_mono = now
        st.resubscribed = False
        st.failures = 0
        st.retry_at_mono = None
        st.last_error = None
        return True

    def check_stale(self, now: float) -> tuple[list[str], list[str]]:
        """Topics silent past their limit: (to resubscribe now, still silent after a resubscribe)."""
        resubscribe: list[str] = []
        dead: list[str] = []
        for st in self.states.values():
            limit = st.stale_after_seconds
            if limit is None or st.state in (SubState.PENDING, SubState.FAILED):
                continue
            if now - st.window_start_mono <= limit:
                continue
            if st.resubscribed:
                dead.append(st.topic)
            else:
                st.state = SubState.STALE
                st.resubscribed = True
                st.window_start_mono = now
                st.last_error = "stale"
                resubscribe.append(st.topic)
        return resubscribe, dead

    def due_retries(self, now: float) -> list[str]:
        """Failed topics whose retry time has come; they go back to pending."""
        due = [st.topic for st in self.states.values()
               if st.state is SubState.FAILED and st.retry_at_mono is not None and st.retry_at_mono <= now]
        for topic in due:
            st = self.states[topic]
            st.state = SubState.PENDING
            st.retry_at_mono = None
            st.window_start_mono = now
        return due

    def all_live(self) -> bool:
        return all(st.state is SubState.LIVE for st in self.states.values())

    def counts(self) -> dict[SubState, int]:
        counts = {state: 0 for state in SubState}
        for st in self.states.values():
            counts[st.state] += 1
        return counts


RequestKind = Literal["subscribe", "unsubscribe"]


@dataclass
class PendingRequest:
    """A sent request waiting for its ack."""

    request: OutgoingRequest
    kind: RequestKind
    sent_mono: float
    future: asyncio.Future[SubscribeAck | None] = field(repr=False)


class PendingAcks:
    """Outstanding requests of one connection, matched by request id, else oldest first."""

    def __init__(self) -> None:
        self._serial = 0
        self._order: OrderedDict[int, PendingRequest] = OrderedDict()
        self._by_id: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._order)

    def add(self, pending: PendingRequest) -> None:
        self._serial += 1
        self._order[self._serial] = pending
        if pending.request.request_id:
            self._by_id[pending.request.request_id] = self._serial

    def _pop(self, serial: int) -> PendingRequest:
        pending = self._order.pop(serial)
        if pending.request.request_id:
            self._by_id.pop(pending.request.request_id, None)
        return pending

    def match(self, ack: SubscribeAck) -> PendingRequest | None:
        """The request this ack answers, removed from the outstanding set; None when unmatched."""
        if ack.request_id:
            serial = self._by_id.get(ack.request_id)
            return self._pop(serial) if serial is not None else None
        if not self._order:
            return None
        return self._pop(next(iter(self._order)))

    def remove(self, pending: PendingRequest) -> bool:
        """Take one request out (its ack did not come in time); False when it was already answered."""
        for serial, candidate in self._order.items():
            if candidate is pending:
                self._pop(serial)
                return True
        return False

    def expired(self, now: float, timeout_seconds: float) -> list[PendingRequest]:
        """Requests unanswered for longer than ``timeout_seconds``, removed."""
        old = [s for s, p in self._order.items() if now - p.sent_mono > timeout_seconds]
        return [self._pop(s) for s in old]

    def drain(self) -> list[PendingRequest]:
        """Every outstanding request, removed (the connection is closing)."""
        return [self._pop(s) for s in list(self._order)]
