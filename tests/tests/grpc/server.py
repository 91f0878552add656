# A grpcio EchoService server: argv = proto_dir, record_dir. Prints "listening <port>".
import os
import sys
import threading
import time
from concurrent import futures

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stubs

pb, rpc = stubs.load(sys.argv[1])
record_dir = sys.argv[2]


def record(name, text):
    with open(os.path.join(record_dir, name), "w") as f:
        f.write(text)


log_lock = threading.Lock()


def log_call(text):
    # One line per execution, so tests can count how often each request was executed.
    with log_lock, open(os.path.join(record_dir, "unary.log"), "a") as f:
        f.write(text + "\n")


class Echo(rpc.EchoServiceServicer):
    def EchoUnary(self, request, context):
        metadata = dict(context.invocation_metadata())
        log_call(request.message)
        if request.message.startswith("mesh-"):
            # Long enough for calls to be in progress in the service when a gateway dies.
            time.sleep(0.02)
        if request.message == "fail":
            context.set_trailing_metadata([("x-reason", "missing")])
            context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
        if request.message == "slow":
            record("remaining", repr(context.time_remaining()))
            time.sleep(3)
            return request
        context.send_initial_metadata([("x-echo", metadata.get("x-custom", ""))])
        context.set_trailing_metadata(
            [("x-trailer", "done"), ("x-raw-bin", metadata.get("x-raw-bin", b""))])
        return pb.EchoMessage(message=request.message)

    def EchoServerStream(self, request, context):
        for index in range(request.count):
            yield pb.EchoMessage(message=f"{request.message}-{index}")

    def EchoClientStream(self, requests, context):
        return pb.EchoMessage(message="".join(m.message for m in requests))

    def EchoBidiStream(self, requests, context):
        for request in requests:
            yield pb.EchoMessage(message=request.message)
            if request.message == "wait":
                while context.is_active():
                    time.sleep(0.05)
                record("cancelled", "yes")
                return


server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
rpc.add_EchoServiceServicer_to_server(Echo(), server)
port = server.add_insecure_port("127.0.0.1:0")
server.start()
print(f"listening {port}", flush=True)
server.wait_for_termination()
