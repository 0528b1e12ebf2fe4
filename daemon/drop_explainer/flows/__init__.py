"""The normalised Flow record and its JSON-lines form."""
