"""Data handling: case discovery, validation, nnU-Net export, splits and the synthetic cohort."""
