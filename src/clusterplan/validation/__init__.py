"""Validation against published measurements: the tables, their adapters, and the harness."""
