"""Constants of the visualisation test cohort (shared by conftest and tests)."""

SHAPE = (24, 28, 20)
SPACING = (1.0, 1.0, 1.5)
LABELLED = "BraTS-GLI-00000-000"
UNLABELLED = "BraTS-GLI-00002-000"
