"""The dashboard: Settings > API Keys and the audit log, server-rendered under `/dashboard`.

`DashboardPlugin(services)` adds its routes, templates, static files and session store to the
Litestar app. Everything it needs (the users' directory, sessions, CSRF) is configured here.
"""

from api.dashboard.plugin import DashboardPlugin

__all__ = ["DashboardPlugin"]
