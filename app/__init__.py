"""A FastAPI service that publishes domain events to Apache Kafka without losing them."""
