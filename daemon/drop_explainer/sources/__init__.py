"""Flow sources: transport, reconnects and de-duplication, nothing else.

Each source turns one upstream (Hubble's gRPC stream, a saved file) into
our Flow records; translating the records is left to ``normalise``.
"""
