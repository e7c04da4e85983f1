"""A real gRPC server and client (grpcio) for the proxy's gRPC test, without generated code:
methods take and return raw bytes.

    grpc_peer.py serve [CERT KEY]  serve edge.test.Echo and grpc.health.v1.Health on 127.0.0.1
                                (h2c, or TLS with the PEM certificate and key); print the port.
                                The health service says SERVING for "" and edge.test.Echo, or
                                NOT_SERVING when GRPC_PEER_HEALTH=not_serving
    grpc_peer.py call ADDRESS   call every method through ADDRESS; print the results as JSON
"""

import json
import os
import sys
import time
from concurrent import futures

import grpc

SERVICE = "edge.test.Echo"


def unary(request, context):
    seen = dict(context.invocation_metadata()).get("x-forwarded-for", "")
    context.set_trailing_metadata((("x-seen-forwarded-for", seen),))
    return b"echo:" + request


def stream(request, context):
    for i in range(int(request.decode())):
        time.sleep(0.2)
        yield f"message {i}".encode()


def unavailable(request, context):
    context.abort(grpc.StatusCode.UNAVAILABLE, "try elsewhere")


def health(request, context):
    # HealthCheckRequest: field 1 (service) is 0x0a, a one-byte length, then the name.
    name = request[2:].decode() if request else ""
    if name not in ("", SERVICE):
        context.abort(grpc.StatusCode.NOT_FOUND, "unknown service")
    # HealthCheckResponse: field 1 (status) is 0x08, then SERVING (1) or NOT_SERVING (2).
    return b"\x08\x02" if os.environ.get("GRPC_PEER_HEALTH") == "not_serving" else b"\x08\x01"


def serve(tls):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "Stream": grpc.unary_stream_rpc_method_handler(stream),
        "Unavailable": grpc.unary_unary_rpc_method_handler(unavailable),
    }
    checks = {"Check": grpc.unary_unary_rpc_method_handler(health)}
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(SERVICE, handlers),
            grpc.method_handlers_generic_handler("grpc.health.v1.Health", checks),
        )
    )
    if tls:
        with open(tls[0], "rb") as c, open(tls[1], "rb") as k:
            creds = grpc.ssl_server_credentials(((k.read(), c.read()),))
        port = server.add_secure_port("127.0.0.1:0", creds)
    else:
        port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    server.wait_for_termination(timeout=120)


def call(address):
    out = {}
    with grpc.insecure_channel(address) as channel:
        reply, c = channel.unary_unary(f"/{SERVICE}/Unary").with_call(b"hello", timeout=10)
        out["unary"] = reply.decode()
        out["unary_code"] = c.code().name
        out["trailing"] = dict(c.trailing_metadata())
        start = time.monotonic()
        arrivals = []
        for m in channel.unary_stream(f"/{SERVICE}/Stream")(b"5", timeout=10):
            arrivals.append([m.decode(), round(time.monotonic() - start, 3)])
        out["stream"] = arrivals
        try:
            channel.unary_unary(f"/{SERVICE}/Unavailable")(b"x", timeout=10)
            out["unavailable"] = "OK"
        except grpc.RpcError as e:
            out["unavailable"] = e.code().name
            out["unavailable_details"] = e.details()
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    serve(sys.argv[2:4]) if sys.argv[1] == "serve" else call(sys.argv[2])
