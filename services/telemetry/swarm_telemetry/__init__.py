"""Swarm telemetry service."""
