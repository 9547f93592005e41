"""Processing provider "SolarSeg": segment raster, evaluate model, train model."""
