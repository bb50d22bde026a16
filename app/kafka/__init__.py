"""The Kafka integration: a lifecycle-managed producer facade, receipts and typed errors.

Import the submodules (`from app.kafka import producer, receipts`); nothing here connects at
import time.
"""
