"""Human-facing output: rich tables for the terminal and report records."""
