"""Detector families: one module or folder each, importable as avbench.detectors.<name>."""
