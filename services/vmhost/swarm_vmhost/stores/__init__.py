"""vmhost's storage, one module per concept:

- `agents`: the agents table (lifecycle, heartbeats, request ids) and its events;
- `addresses`: the address pool (IPAM), used inside the agents' transactions,
  and addresses held for guests readied ahead of their agent;
- `healing`: the audit log of self-healing actions and its events;
- `pools`: tenants' target pools (swarm_vmhost.pool).
"""

from swarm_vmhost.stores.addresses import AddressPool, HeldAddresses
from swarm_vmhost.stores.agents import AgentStore
from swarm_vmhost.stores.healing import HealingLog
from swarm_vmhost.stores.pools import PoolStore

__all__ = ["AddressPool", "AgentStore", "HealingLog", "HeldAddresses", "PoolStore"]
