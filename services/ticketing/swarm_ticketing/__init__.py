"""Swarm ticketing service."""
