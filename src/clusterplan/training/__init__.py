"""Training-step estimator: FLOPs, memory and step time, vectorised over a batch of plans."""
