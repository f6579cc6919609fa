"""The one compiled part of mothertree: the moments kernel of the feature loop (``features/_moments.c``).

Everything else is in ``pyproject.toml``; setuptools reads both. The kernel uses only Python's C API (no
numpy headers), so it builds with the C compiler and Python headers alone.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "mothertree.features._moments",
            sources=["src/mothertree/features/_moments.c"],
            # -O3 vectorises the fixed-lane loops; no -ffast-math: the sums' order is part of the result.
            extra_compile_args=["-O3", "-std=c11", "-ffp-contract=off"],
            extra_link_args=["-pthread"],
        )
    ]
)
