"""The message store: its contract (`base`), the SQL store (`sql`), the in-memory store
(`memory`), the relay that replays it (`relay`) and the lease one relay holds (`lease`)."""

from kafka_events.store.base import Lease, MessageStore, Origin, Status, StoredMessage
from kafka_events.store.memory import MemoryStore
from kafka_events.store.relay import Relay
from kafka_events.store.sql import SqlStore

__all__ = [
    "Lease",
    "MemoryStore",
    "MessageStore",
    "Origin",
    "Relay",
    "SqlStore",
    "Status",
    "StoredMessage",
]
