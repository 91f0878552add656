# Generates the stubs of `<name>.proto` (EchoService by default) with grpcio-tools into a
# temporary directory and imports them.
import importlib
import os
import sys
import tempfile

from grpc_tools import protoc


def load(proto_dir, name="echo"):
    out = tempfile.mkdtemp()
    args = ["protoc", f"-I{proto_dir}", f"--python_out={out}", f"--grpc_python_out={out}",
            os.path.join(proto_dir, f"{name}.proto")]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    sys.path.insert(0, out)
    return importlib.import_module(f"{name}_pb2"), importlib.import_module(f"{name}_pb2_grpc")
