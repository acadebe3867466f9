"""Regenerate agent_pb2.py from udf.proto.

Uses protoc 3.21 (bundled in grpcio-tools 1.50.0) on purpose: its output has no
gencode/runtime version check, so the module imports on every protobuf runtime
from 4.21 to the newest. A newer protoc would refuse older runtimes.

    python -m venv /tmp/gen && /tmp/gen/bin/pip install grpcio-tools==1.50.0
    /tmp/gen/bin/python scripts/gen_proto.py
"""

from __future__ import annotations

import pathlib
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent


def main() -> None:
    with tempfile.TemporaryDirectory() as out:
        subprocess.run(
            [sys.executable, "-m", "grpc_tools.protoc", f"-I{ROOT}", f"--python_out={out}", "udf.proto"],
            check=True,
        )
        code = (pathlib.Path(out) / "udf_pb2.py").read_text()
    # The module is imported as agent_pb2 (the proto package's name); the
    # descriptor keeps its source file name, udf.proto.
    code = code.replace("'udf_pb2'", "'agent_pb2'")
    (ROOT / "agent_pb2.py").write_text(code)
    print("wrote", ROOT / "agent_pb2.py")


if __name__ == "__main__":
    main()
