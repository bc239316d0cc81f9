"""A raylet simulator: many raylets in one asyncio process against any GCS, through Ray's
protocol (gcs_ha/proto/ray). See gcs_ha/testing/DESIGN.md ("The raylet simulator").

  node.py      one simulated raylet: its servers and its calls to the GCS
  gcs.py       the GCS stubs the nodes call through
  fleet.py     the N nodes of the process and what they share
  workload.py  the driver's side and the measurements (actors, groups, view probes)
  main.py      the process: `python -m gcs_ha.testing.raylet_sim`, JSON lines
"""
