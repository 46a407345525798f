"""Build hook: generate the protobuf/gRPC modules from proto/ before packaging."""

from __future__ import annotations

import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


class BuildPyWithProtos(build_py):
    def run(self) -> None:
        sys.path.insert(0, str(ROOT / "proto"))
        from generate import generate  # noqa: PLC0415

        generate(ROOT)
        super().run()


setup(cmdclass={"build_py": BuildPyWithProtos})
