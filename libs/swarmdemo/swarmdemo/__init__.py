"""The offline Swarm demo (`python -m swarmdemo`, `make demo`).

It drives the product from outside, as an operator and a tenant would: it
starts the services, talks to the gateway over REST and to vmhost over gRPC,
and serves the agents' LLM from a local Messages-API server whose URL it hands
to vmhost as guest configuration. Nothing in the product imports this package.
"""
