"""The interactive web planner (``clusterplan web``): a JSON API under ``/api/`` mirroring the
CLI's ``--json`` and server-rendered pages; nothing loads from the network."""
