"""Long-running processes: the outbox relay and the projection runners."""
