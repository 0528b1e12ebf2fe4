"""Pure translations from each CNI's own flow records to our Flow record.

One module per source (``hubble``...). Nothing here does I/O or keeps
state beyond small caches, so the same functions serve the live gRPC
stream, saved files and tests.
"""
