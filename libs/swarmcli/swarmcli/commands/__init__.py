"""One module per resource; each defines a typer app (or a command) that
swarmcli.main mounts."""
