"""The compiled parts of mothertree: the feature loop's kernels, its moments (``features/_moments.c``) and
its centred Gram products (``features/_linalg.c``).

Everything else is in ``pyproject.toml``; setuptools reads both. The kernels use only Python's C API (no
numpy headers), so they build with the C compiler and Python headers alone.
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
        ),
        Extension(
            "mothertree.features._linalg",
            sources=["src/mothertree/features/_linalg.c"],
            extra_compile_args=["-O3", "-std=c11", "-ffp-contract=off"],
        ),
    ]
)
