"""The pure core of Icodrip Keys: organizations, API keys, key format, plans and permissions.

Nothing here does I/O or imports a framework: only the standard library and
`eventsourcing.domain`.
"""
