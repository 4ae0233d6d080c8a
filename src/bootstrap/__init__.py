"""The composition root: the one place that builds the service's parts from `Settings`.

Everything below it (`api`, `workers`, `projections`, `adapters`, `application`, `domain`)
receives what it works with; only this package and the command line (`cli`) choose which
store, view, publisher, limiter and projection a process gets. `bootstrap.api` assembles an API
process, `bootstrap.asgi` is the ASGI target granian loads, `bootstrap.projections` is the
catalog of read models operators can inspect and rebuild.
"""
