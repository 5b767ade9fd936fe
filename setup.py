"""Build of shardkv's compiled modules (Cython); everything else is in pyproject.toml.

Each module is compiled with the SHA-256 of its .pyx, so that an edited source is never silently
run stale: shardkv/native.py refuses to import a module whose .pyx changed since it was built."""

import hashlib
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

ROOT = Path(__file__).parent
MODULES = {"index": ["z"], "alloc": [], "numbers": [], "resp": []}  # module -> C libraries it links


def extension(name: str, libraries: list[str]) -> Extension:
    source = f"shardkv/{name}.pyx"
    digest = hashlib.sha256((ROOT / source).read_bytes()).hexdigest()
    return Extension(f"shardkv.{name}", [source], libraries=libraries, extra_compile_args=["-O2"],
                     define_macros=[("SHARDKV_SOURCE_SHA256", f'"{digest}"')])


setup(ext_modules=cythonize([extension(n, libs) for n, libs in MODULES.items()], quiet=True,
                            compiler_directives={"language_level": "3"}))
