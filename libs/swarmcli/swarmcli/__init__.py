"""The `swarm` command line: a thin client of the REST gateway (and `swarm
up`, which runs the local mesh in the foreground)."""
