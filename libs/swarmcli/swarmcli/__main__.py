"""python -m swarmcli: the same as the `swarm` command."""

from swarmcli.main import app

app(prog_name="swarm")
