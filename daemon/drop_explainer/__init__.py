"""drop-explainer: turns silent NetworkPolicy drops into named, explained facts."""

__version__ = "0.1.0"
