"""The service layer: commands on organizations and keys, committed to the event store."""
