"""Dialogs of the SolarSeg plugin (Train, Segment Layer, Inspect Errors, dependencies)."""
