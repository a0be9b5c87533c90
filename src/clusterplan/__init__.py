"""clusterplan: a planning and simulation system for AI supercomputers.

Specs in (chips, systems, models, plans), predictions out (step time, memory, time to train),
validated against published measurements. See DESIGN.md for the layering.
"""

__version__ = "0.1.0"
