"""Compilers: one module per policy kind, each into the rule model of policy/model.py."""
