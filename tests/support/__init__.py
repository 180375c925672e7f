"""What every test package shares: harnesses that start real servers, status
assertions, `eventually`, webhook receivers and migration checks.

Tests import helpers from here (or from their own package), never from a
conftest module or from another service's test package; fixtures stay in
conftest files and build on these.
"""
