"""Build of shardkv's compiled modules (Cython); everything else is in pyproject.toml.

Each module is compiled with the SHA-256 of its .pyx (and of the .pxd declarations beside it), so that an edited source is never silently
run stale: shardkv/native.py refuses to import a module whose .pyx changed since it was built."""

import hashlib
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

ROOT = Path(__file__).parent
MODULES = {"index": ["z"], "alloc": [], "numbers": [], "resp": [], "hop": [], "layouts": ["z"], "fast": []}  # module -> C libraries it links


def source_digest(name: str) -> str:
    """SHA-256 of the module's .pyx and of every .pxd beside it (the declarations it may cimport);
    shardkv/native.py computes the same."""
    digest = hashlib.sha256((ROOT / "shardkv" / f"{name}.pyx").read_bytes())
    for pxd in sorted((ROOT / "shardkv").glob("*.pxd")):
        digest.update(pxd.read_bytes())
    return digest.hexdigest()


def extension(name: str, libraries: list[str]) -> Extension:
    source = f"shardkv/{name}.pyx"
    digest = source_digest(name)
    return Extension(f"shardkv.{name}", [source], libraries=libraries, extra_compile_args=["-O2"],
                     define_macros=[("SHARDKV_SOURCE_SHA256", f'"{digest}"')])


setup(ext_modules=cythonize([extension(n, libs) for n, libs in MODULES.items()], quiet=True,
                            compiler_directives={"language_level": "3"}))
