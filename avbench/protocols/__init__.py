"""Protocols as data: one TOML file each."""
