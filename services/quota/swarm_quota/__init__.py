"""Swarm quota service."""
