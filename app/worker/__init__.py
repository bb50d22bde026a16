"""The verification-email worker: the consumer side of `send.verification.email`.

Run it with `python -m app.worker`. `consumer` holds the worker (consumer group, retries,
dead letters, replies, commits), `mailer` the email and how it is sent, `handled` the durable
record of handled event ids, `messages` the wire formats it reads and writes.
"""
