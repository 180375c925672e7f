"""Swarm events service."""
