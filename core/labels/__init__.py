"""Training data from map layers: rasters + a polygon layer -> image/mask tiles and a
manifest (``python -m core chips``)."""
