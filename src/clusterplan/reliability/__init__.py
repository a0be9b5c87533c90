"""Failures, checkpoints and goodput of long training runs (closed form and Monte Carlo)."""
