"""The domain: events, subscriptions, deliveries, retry policy and signatures.

Plain typed code with no I/O, so every rule here is unit-tested without a database.
"""
