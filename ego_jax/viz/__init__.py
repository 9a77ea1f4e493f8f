"""Visualisation: CAM and motion-map overlays, confusion matrices and curves."""
