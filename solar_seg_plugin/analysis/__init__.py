"""Error analysis on the map: per-tile layer groups, error overlays, the per-tile dock."""
