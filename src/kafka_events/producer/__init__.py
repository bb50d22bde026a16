"""Producers: one long-lived aiokafka producer per producer configuration (`lifecycle`),
publishing under a named policy (`publish`), and transactions (`transactions`)."""

from kafka_events.producer.lifecycle import ManagedProducer, ProducerState
from kafka_events.producer.publish import KafkaPublisher

__all__ = ["KafkaPublisher", "ManagedProducer", "ProducerState"]
