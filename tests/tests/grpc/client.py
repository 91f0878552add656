# A grpcio EchoService client: argv = proto_dir, target, scenarios (comma separated), and
# optionally a CA certificate for TLS. Prints one JSON object: scenario -> {ok} or {error}.
import json
import os
import sys
import threading
import time

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stubs

pb, rpc = stubs.load(sys.argv[1])
target, scenarios = sys.argv[2], sys.argv[3].split(",")
if len(sys.argv) > 4:
    with open(sys.argv[4], "rb") as f:
        credentials = grpc.ssl_channel_credentials(f.read())
    channel = grpc.secure_channel(target, credentials)
else:
    channel = grpc.insecure_channel(target)
stub = rpc.EchoServiceStub(channel)
M = pb.EchoMessage


def metadata(pairs):
    return {k: (v.hex() if isinstance(v, bytes) else v) for k, v in (pairs or ())}


def unary():
    reply, call = stub.EchoUnary.with_call(
        M(message="hello"), metadata=[("x-custom", "v1"), ("x-raw-bin", b"\x00\xff")])
    return {"message": reply.message, "initial": metadata(call.initial_metadata()),
            "trailing": metadata(call.trailing_metadata())}


def cancel():
    release = threading.Event()

    def requests():
        yield M(message="wait")
        release.wait(10)

    call = stub.EchoBidiStream(requests())
    first = next(call).message
    call.cancel()
    release.set()
    return first


def stream_deadline():
    # A client stream still open at its deadline.
    def requests():
        yield M(message="early")
        time.sleep(3)
        yield M(message="late")

    return stub.EchoClientStream(
        requests(), timeout=1, metadata=[("idempotency-key", "deadline-key")]).message


def stream_cancel():
    # A client stream the client cancels after its first message.
    sent = threading.Event()
    release = threading.Event()

    def requests():
        yield M(message="early")
        sent.set()
        release.wait(10)

    call = stub.EchoClientStream.future(
        requests(), metadata=[("idempotency-key", "cancel-key")])
    sent.wait(10)
    time.sleep(0.5)
    call.cancel()
    release.set()
    return "cancelled" if call.cancelled() else call.result().message


def ready():
    # Calls until one is answered: a path that starts asynchronously (a Kafka read) may drop
    # the first calls, each then failing at its deadline.
    for attempt in range(30):
        try:
            return stub.EchoUnary(M(message="ready"), timeout=2).message
        except grpc.RpcError as error:
            if error.code() not in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE):
                raise
    raise SystemExit("never answered")


raw = channel.unary_unary("/example.EchoService/EchoUnary")
RUN = {
    "unary": unary,
    "server_stream": lambda: [r.message for r in stub.EchoServerStream(M(message="tick", count=10))],
    "client_stream": lambda: stub.EchoClientStream(iter([M(message=m) for m in "abc"])).message,
    "bidi": lambda: [r.message for r in stub.EchoBidiStream(iter([M(message=m) for m in ["one", "two", "three"]]))],
    "status": lambda: stub.EchoUnary(M(message="fail")).message,
    "deadline": lambda: stub.EchoUnary(M(message="slow"), timeout=0.5).message,
    # field 1 announces 5 bytes of string, 2 follow
    "invalid": lambda: raw(b"\x0a\x05he").hex(),
    "valid_raw": lambda: raw(b"\x0a\x02hi").hex(),
    "unknown": lambda: channel.unary_unary("/example.EchoService/Nope")(b"").hex(),
    "cancel": cancel,
    "ready": ready,
    "stream_deadline": stream_deadline,
    "stream_cancel": stream_cancel,
}

results = {}
for name in scenarios:
    try:
        results[name] = {"ok": RUN[name]()}
    except grpc.RpcError as error:
        results[name] = {"error": {"code": error.code().name, "details": error.details(),
                                   "trailing": metadata(error.trailing_metadata())}}
print(json.dumps(results))
