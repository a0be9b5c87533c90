"""Inference: step-time estimator (prefill, decode), request-level serving simulator, capacity."""
