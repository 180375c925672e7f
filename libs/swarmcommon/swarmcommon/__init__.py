"""Shared building blocks of every Swarm service."""
