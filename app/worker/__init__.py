"""The verification-email worker: the consumer side of `send.verification.email`.

Run it with `python -m app.worker`. `consumer` holds the worker, a handler on the library's
consumer runner (which owns the group, commits, retries, dead letters and replies), `mailer`
the email and how it is sent, `messages` the wire formats it reads and writes. Handled event
ids are kept in the library's `kafka_events.consumer.HandledEvents` table.
"""
