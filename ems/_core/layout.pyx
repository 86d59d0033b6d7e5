# cython: language_level=3
"""Column indices of the native core's arrays (declared in layout.pxd, exported to Python here)."""
