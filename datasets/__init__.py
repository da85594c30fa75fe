"""Dataset adapters: one module each, importable as avbench.datasets.<name>."""
