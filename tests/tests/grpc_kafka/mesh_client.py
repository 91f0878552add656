# Unary EchoService calls, `count` of them `concurrency` at a time: argv = proto_dir, target,
# prefix, count, concurrency. Call i sends `<prefix>-<i>`, which is also its idempotency key,
# with a 30 s deadline. A call that fails UNAVAILABLE or DEADLINE_EXCEEDED is tried again
# with the same payload and key (up to 3 attempts), as a client of a service that may restart
# would; other errors are final. Prints {payload: {"reply", "attempts"} or {"error", "attempts"}}.
import json
import os
import sys
import time
from concurrent import futures

import grpc

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "grpc"))
import stubs

pb, rpc = stubs.load(sys.argv[1])
target, prefix = sys.argv[2], sys.argv[3]
count, concurrency = int(sys.argv[4]), int(sys.argv[5])
stub = rpc.EchoServiceStub(grpc.insecure_channel(target))
RETRIED = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
ATTEMPTS = 3


def call(payload):
    for attempt in range(1, ATTEMPTS + 1):
        try:
            reply = stub.EchoUnary(pb.EchoMessage(message=payload), timeout=30,
                                   metadata=[("idempotency-key", payload)])
            return payload, {"reply": reply.message, "attempts": attempt}
        except grpc.RpcError as error:
            if error.code() not in RETRIED or attempt == ATTEMPTS:
                return payload, {"error": str(error.code()), "attempts": attempt}
            time.sleep(0.5)


with futures.ThreadPoolExecutor(concurrency) as pool:
    results = dict(pool.map(call, [f"{prefix}-{index}" for index in range(count)]))
print(json.dumps(results), flush=True)
