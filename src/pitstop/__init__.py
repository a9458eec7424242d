"""Pitstop: self-hostable predictive maintenance for machine fleets.

Importing this package does nothing but define names: no folders, no logging, no tracking URI.
"""

__version__ = "0.1.0"
