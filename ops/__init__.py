"""Operational tooling that ships with the repository but is not part of the server package."""
