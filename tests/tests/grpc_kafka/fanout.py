# A grpcio FanoutService client: argv = proto_dir, target, count, and optionally the last
# message id to resume after (base64url). Reads `count` messages, then cancels; prints
# [{"message", "id"}] with each id base64url-encoded, or {"error": code} on failure.
import base64
import json
import os
import sys

import grpc

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "grpc"))
import stubs

pb, rpc = stubs.load(sys.argv[1], "fanout")
target, count = sys.argv[2], int(sys.argv[3])
metadata = [("last-message-id", sys.argv[4])] if len(sys.argv) > 4 else []
stub = rpc.FanoutServiceStub(grpc.insecure_channel(target))
call = stub.FanoutServerStream(pb.FanoutRequest(), metadata=metadata, timeout=60)
received = []
try:
    for message in call:
        received.append({"message": message.message,
                         "id": base64.urlsafe_b64encode(message.message_id).decode()})
        if len(received) == count:
            break
    call.cancel()
except grpc.RpcError as error:
    if error.code() != grpc.StatusCode.CANCELLED:
        print(json.dumps({"error": error.code().name, "received": received}))
        sys.exit(0)
print(json.dumps(received))
