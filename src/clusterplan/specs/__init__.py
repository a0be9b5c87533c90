"""Frozen, validated specifications: chip, system, model, plan. Validation happens here, at the edge."""

from clusterplan.specs.chip import Chip, Precision
from clusterplan.specs.model import MLA, Model, MoE
from clusterplan.specs.plan import Plan
from clusterplan.specs.system import FabricTier, System

__all__ = ["MLA", "Chip", "FabricTier", "MoE", "Model", "Plan", "Precision", "System"]
