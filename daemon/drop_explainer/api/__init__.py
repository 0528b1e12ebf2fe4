"""The HTTP API: readable explanations for people, documented JSON for programs."""
