"""Swarm vmhost service."""
