"""kafka_events: publish domain events from FastAPI to Apache Kafka without losing them.

The public names are these; the FastAPI binding is `kafka_events.fastapi`, the test doubles
`kafka_events.testing`, and modules whose names start with `_` are private.
"""

from kafka_events import context
from kafka_events.bus import Dispatched, EventBus, EventBusStateError, EventConfigurationError
from kafka_events.client import KafkaEvents
from kafka_events.config import (
    DEFAULT_POLICIES,
    Acks,
    CompressionType,
    KafkaConfig,
    Partitioner,
    Policy,
    ProducerConfig,
    ReplayConfig,
    ReplyConfig,
    Retry,
    SaslMechanism,
    SecurityConfig,
    SecurityProtocol,
    TopicName,
)
from kafka_events.errors import (
    AccessRefused,
    BrokerUnavailable,
    ConfigurationError,
    DeliveryTimeout,
    EncodingError,
    KafkaEventsError,
    MalformedReply,
    PublishError,
    PublisherStateError,
    PublishRejected,
    RecordTooLarge,
    RepliesUnavailable,
    ReplyTimeout,
    StoreError,
    StoreUnavailable,
)
from kafka_events.messages import OutgoingMessage, header
from kafka_events.metrics import Metrics
from kafka_events.producer import KafkaPublisher, ProducerState
from kafka_events.receipts import DeliveryReceipt, QueuedReceipt, Receipt
from kafka_events.replies import Reply
from kafka_events.serialization import EventSpec, JsonSerializer, Serializer, event, to_message
from kafka_events.store import MemoryStore, MessageStore, Origin, SqlStore, Status, StoredMessage

__all__ = [
    "DEFAULT_POLICIES",
    "AccessRefused",
    "Acks",
    "BrokerUnavailable",
    "CompressionType",
    "ConfigurationError",
    "DeliveryReceipt",
    "DeliveryTimeout",
    "Dispatched",
    "EncodingError",
    "EventBus",
    "EventBusStateError",
    "EventConfigurationError",
    "EventSpec",
    "JsonSerializer",
    "KafkaConfig",
    "KafkaEvents",
    "KafkaEventsError",
    "KafkaPublisher",
    "MalformedReply",
    "MemoryStore",
    "MessageStore",
    "Metrics",
    "Origin",
    "OutgoingMessage",
    "Partitioner",
    "Policy",
    "ProducerConfig",
    "ProducerState",
    "PublishError",
    "PublishRejected",
    "PublisherStateError",
    "QueuedReceipt",
    "Receipt",
    "RecordTooLarge",
    "ReplayConfig",
    "RepliesUnavailable",
    "Reply",
    "ReplyConfig",
    "ReplyTimeout",
    "Retry",
    "SaslMechanism",
    "SecurityConfig",
    "SecurityProtocol",
    "Serializer",
    "SqlStore",
    "Status",
    "StoreError",
    "StoreUnavailable",
    "StoredMessage",
    "TopicName",
    "context",
    "event",
    "header",
    "to_message",
]
