"""A local OTLP/HTTP trace receiver for the tests: decodes the protobuf spans nodes post (with
opentelemetry-proto) and keeps them."""
import http.server
import threading
import time

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from conftest import free_port


class Receiver:
    """An OTLP/HTTP trace receiver: decodes each POST to /v1/traces and keeps its spans."""

    def __init__(self):
        self.spans = []  # (resource attributes, span)
        self.posts = []  # (path, content type)
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = trace_service_pb2.ExportTraceServiceRequest()
                request.ParseFromString(body)
                with receiver.lock:
                    receiver.posts.append((self.path, self.headers["Content-Type"]))
                    for resource_spans in request.resource_spans:
                        resource = attributes(resource_spans.resource.attributes)
                        for scope in resource_spans.scope_spans:
                            receiver.spans.extend((resource, span) for span in scope.spans)
                reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def trace(self, trace_id, count, seconds):
        """The spans of `trace_id` once at least `count` arrived (or whatever came within `seconds`)."""
        deadline = time.time() + seconds
        while True:
            with self.lock:
                found = [(resource, span) for resource, span in self.spans if span.trace_id == trace_id]
            if len(found) >= count or time.time() > deadline:
                return found
            time.sleep(0.05)


def attributes(pairs):
    values = {}
    for pair in pairs:
        kind = pair.value.WhichOneof("value")
        value = getattr(pair.value, kind)
        if kind == "array_value":
            value = [getattr(v, v.WhichOneof("value")) for v in value.values]
        values[pair.key] = value
    return values
