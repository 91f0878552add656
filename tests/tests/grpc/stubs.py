# Generates the EchoService stubs with grpcio-tools into a temporary directory and imports them.
import os
import sys
import tempfile

from grpc_tools import protoc


def load(proto_dir):
    out = tempfile.mkdtemp()
    args = ["protoc", f"-I{proto_dir}", f"--python_out={out}", f"--grpc_python_out={out}",
            os.path.join(proto_dir, "echo.proto")]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    sys.path.insert(0, out)
    import echo_pb2
    import echo_pb2_grpc
    return echo_pb2, echo_pb2_grpc
