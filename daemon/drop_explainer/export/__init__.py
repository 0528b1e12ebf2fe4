"""Explained drops exported to the stores operators already run (OTLP logs, JSON lines)."""
