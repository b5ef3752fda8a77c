"""FeedAgent: exchange positions and mark prices, kept fresh and correct."""

__version__ = "0.1.0"
