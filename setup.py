"""Build of the compiled hot path.

Every ``.pyx`` in ``ems/_core`` becomes one extension module. Flags are portable: no ``-march=native``
by default so the same source builds on the aarch64 board; an OEM may add tuning flags through
``EMS_EXTRA_CFLAGS`` (e.g. ``-mcpu=cortex-a72``) when it builds the wheel for its own board.
"""
import os
import shlex
import sys
from pathlib import Path

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

CORE = Path("ems") / "_core"

extra_compile_args = []
if sys.platform != "win32":
    # -O3 lets gcc unroll the per-cell loops; no -ffast-math: the kernels rely on NaN tests.
    extra_compile_args = ["-O3", "-fno-math-errno", "-Wno-unreachable-code"]
extra_compile_args += shlex.split(os.environ.get("EMS_EXTRA_CFLAGS", ""))

extensions = [
    Extension(
        f"ems._core.{pyx.stem}",
        [str(pyx)],
        include_dirs=[str(CORE), numpy.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=extra_compile_args,
    )
    for pyx in sorted(CORE.glob("*.pyx"))
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={
            "language_level": "3",
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
            "nonecheck": False,
            "embedsignature": True,
        },
        annotate=bool(os.environ.get("EMS_CYTHON_ANNOTATE")),
    ),
)
