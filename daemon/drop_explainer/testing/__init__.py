"""Test doubles that ship with the package, because the demo uses them too."""
