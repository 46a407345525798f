"""Generate the Python protobuf/gRPC modules and their typed stubs from proto/.

Output goes beside the package sources (feature_store/serving/v1/, git-ignored),
so the proto package `feature_store.serving.v1` is importable under the same name.
Run by `make proto` and by the setuptools build (setup.py), never committed.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def _plugin(name: str) -> str:
    """mypy-protobuf's protoc plugin: on PATH (pip's isolated build env), or beside the interpreter."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        raise SystemExit(f"{name} not found: install mypy-protobuf (pip install -e '.[dev]')")
    return found


def generate(root: Path) -> list[Path]:
    from grpc_tools import protoc  # noqa: PLC0415 - build-time dependency only

    proto_root = root / "proto"
    protos = sorted(proto_root.glob("feature_store/**/*.proto"))
    if not protos:
        raise SystemExit(f"no .proto files under {proto_root}")
    include = Path(protoc.__file__).parent / "_proto"
    plugins = {name: _plugin(name) for name in ("protoc-gen-mypy", "protoc-gen-mypy_grpc")}
    args = [
        "grpc_tools.protoc",
        f"-I{proto_root}",
        f"-I{include}",
        f"--python_out={root}",
        f"--grpc_python_out={root}",
        *(f"--plugin={name}={path}" for name, path in plugins.items()),
        f"--mypy_out={root}",
        f"--mypy_grpc_out={root}",
        *(str(p) for p in protos),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    outputs: list[Path] = []
    for proto in protos:
        package_dir = root / proto.parent.relative_to(proto_root)
        (package_dir / "__init__.py").touch()
        outputs.extend(package_dir.glob(f"{proto.stem}_pb2*"))
    return outputs


if __name__ == "__main__":
    here = Path(__file__).resolve().parent.parent
    for path in generate(here):
        print(path.relative_to(here))
    sys.exit(0)
