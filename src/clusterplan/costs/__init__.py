"""Cost primitives: compute (roofline + efficiency) and collectives (hierarchical fabrics)."""
