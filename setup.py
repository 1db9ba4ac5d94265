"""The compiled accelerator `catalog_sync._speedups` (all other metadata: pyproject.toml).

It is optional: where it cannot be built (no C compiler), the install goes on without
it and `catalog_sync.values` runs the same functions in Python.
"""

from __future__ import annotations

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "catalog_sync._speedups",
            ["plugins/catalog_sync/_speedups.c"],
            depends=["plugins/catalog_sync/_speedups_scan.h"],
            optional=True,
        )
    ]
)
