"""The actor wing: Ray's GcsActorManager and GcsActorScheduler (DESIGN.md beside this file)."""
