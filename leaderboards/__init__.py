"""Committed tables: published reference numbers and golden tables for regression checks."""
