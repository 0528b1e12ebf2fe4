"""The pure NetworkPolicy engine: no I/O, no asyncio."""
