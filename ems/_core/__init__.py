"""The compiled hot path. Every module here is a Cython extension; there is no pure-Python fallback.

An uncompiled checkout must fail loudly at import: a controller silently running Python kernels would
miss its loop deadlines. Build with ``make install`` (or ``pip install -e .``).
"""

_KERNELS = ("layout", "aggregate", "protection", "derate", "soc", "balance", "arbitrate", "tick")


def _check_compiled() -> None:
    import importlib

    for name in _KERNELS:
        try:
            importlib.import_module(f"{__name__}.{name}")
        except ImportError as exc:  # pragma: no cover - exercised by test_uncompiled_checkout_fails
            raise ImportError(
                f"ems._core.{name} is not compiled ({exc}). The native core is built at install time: "
                "run `make install` (or `pip install -e .`) in the project root; a build needs a C "
                "compiler and the Python headers."
            ) from exc


_check_compiled()
