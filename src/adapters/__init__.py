"""Adapters shared by the API, workers and CLI: settings, event store, NATS, Redis, logging."""
