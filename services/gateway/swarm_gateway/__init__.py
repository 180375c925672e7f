"""Swarm REST gateway."""
