"""Swarm agent runtime and client SDK."""
