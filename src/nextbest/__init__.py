"""nextbest: next-best-action service for pharmaceutical omnichannel engagement."""

__version__ = "0.2.0"
