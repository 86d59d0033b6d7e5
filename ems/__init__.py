"""Open EMS main controller for battery energy storage."""

__version__ = "0.1.0"
