"""Adapters that bring public data sets of other shapes through the data contract."""

from nextbest.contract.adapters.detailing import load_detailing
from nextbest.contract.adapters.hillstrom import load_hillstrom

__all__ = ["load_detailing", "load_hillstrom"]
