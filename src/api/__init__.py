"""The Litestar application: auth, rate limiting, resources, management API and dashboard."""
