"""Visualisation: pure rendering (arrays -> RGB uint8), writers, Dash apps and architecture figures.

`segkit.viz.render` is numpy only and does no I/O; `segkit.viz.export` writes PNG/GIF/figures atomically;
`segkit.viz.app` and `segkit.viz.stats_app` compose the renderer into Dash apps (created by factories, never
at import); `segkit.viz.arch` reads nnU-Net plans and draws the network. Importing this package is cheap.
"""
