"""`python -m gcs_ha.testing.raylet_sim` (see main.py)."""

import sys

from gcs_ha.testing.raylet_sim.main import main

sys.exit(main())
