"""A plaintext grpcio server for ``echo.proto`` (the real-peer tests).

Run as a script: ``python tests/peers/grpc_server.py --stubs DIR --host 127.0.0.1 --port P``
where ``DIR`` holds ``echo_pb2.py`` and ``echo_pb2_grpc.py`` (``tests/realpeers2.grpc_stubs``).
It prints ``listening HOST PORT`` once it serves and runs until SIGTERM/SIGINT. The behaviour
of each method is described in ``echo.proto``.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from concurrent import futures
from typing import Any


def make_servicer(pb2: Any, pb2_grpc: Any) -> Any:
    import grpc

    class Echo(pb2_grpc.EchoServicer):  # type: ignore[misc, name-defined]
        def Unary(self, request: Any, context: Any) -> Any:
            if request.text == "missing":
                context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
            if request.text == "missing%":  # a message that needs percent-encoding
                context.abort(grpc.StatusCode.NOT_FOUND, "no such thing: 100% sûr")
            if request.text.startswith("gz"):
                context.set_compression(grpc.Compression.Gzip)
            return pb2.EchoReply(text=request.text, index=request.count, inner=request.inner)

        def ServerStream(self, request: Any, context: Any) -> Any:
            for i in range(request.count):
                yield pb2.EchoReply(text=f"{request.text}-{i}", index=i)

        def ClientStream(self, request_iterator: Any, context: Any) -> Any:
            texts = [r.text for r in request_iterator]
            return pb2.EchoReply(text="+".join(texts), index=len(texts))

        def Bidi(self, request_iterator: Any, context: Any) -> Any:
            for i, r in enumerate(request_iterator):
                yield pb2.EchoReply(text=r.text.upper(), index=i)

    return Echo()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--stubs", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()
    sys.path.insert(0, args.stubs)
    import echo_pb2
    import echo_pb2_grpc
    import grpc

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    echo_pb2_grpc.add_EchoServicer_to_server(make_servicer(echo_pb2, echo_pb2_grpc), server)
    host = f"[{args.host}]" if ":" in args.host else args.host
    got = server.add_insecure_port(f"{host}:{args.port}")
    if got == 0:
        print(f"failed {args.host} {args.port}", flush=True)
        sys.exit(1)
    server.start()
    print(f"listening {args.host} {got}", flush=True)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    server.stop(0).wait(5)


if __name__ == "__main__":
    main()
