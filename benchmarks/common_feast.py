"""The Feast venv shared by the benchmarks that compare with Feast (export, serving).

Feast never goes into this project's venv: its pins conflict with PyFlink's. It lives in its own
venv, ``.stack/feast-venv`` (git-ignored), made with ``python -m venv`` and the latest Feast
from PyPI plus the extras a benchmark needs; the benchmarks run Feast in child processes with
that venv's Python.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FEAST_VENV = ROOT / ".stack" / "feast-venv"
# the module each Feast extra brings, to check it is installed
EXTRA_MODULES = {"duckdb": "duckdb", "cassandra": "cassandra"}


def ensure_feast_venv(extras: Sequence[str], upgrade: bool = False, venv: Path = FEAST_VENV) -> Path:
    """The Python of a venv where ``import feast`` and the modules of ``extras`` work.

    Creates the venv if missing and pip-installs ``feast[extras]`` (latest) when Feast or one
    of the extras is missing, or always with ``upgrade``. Returns the venv's python."""
    python = venv / "bin" / "python"
    modules = ["feast", *(EXTRA_MODULES.get(e, e) for e in extras)]
    probe = [str(python), "-c", f"import {', '.join(modules)}"]
    if (
        python.is_file()
        and not upgrade
        and subprocess.run(probe, check=False, capture_output=True).returncode == 0
    ):
        return python
    package = f"feast[{','.join(extras)}]" if extras else "feast"
    if not python.is_file():
        print(f"creating {venv} (python -m venv, pip install {package})", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--upgrade"]
    subprocess.run(pip + ["pip"], check=True)
    subprocess.run(pip + [package], check=True)
    return python
