from swarm_vmhost.tables import metadata
from swarmcommon.migrations import run_env

run_env(metadata)
