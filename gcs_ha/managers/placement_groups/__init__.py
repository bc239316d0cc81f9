"""The placement group wing: Ray's GcsPlacementGroupManager and GcsPlacementGroupScheduler
(DESIGN.md beside this file)."""
