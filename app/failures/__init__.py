"""Messages kept durably until Kafka has them: failed publishes (replayed) and the outbox."""
