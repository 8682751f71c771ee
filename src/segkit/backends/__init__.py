"""Training and inference backends (plugins of the ``segkit.backends`` entry-point group)."""
