"""The web dashboard: server-rendered pages over the gateway's own routes.

`swarm_gateway.dashboard.app.install(app)` adds it; this package's
`__init__` stays empty so config.py can import `session` without a cycle.
"""
