"""Webhook delivery throughput: ``--messages`` outbox messages to ``--receivers`` loopback receivers.

On a scratch database (bench/common.py), one subscription per receiver (each a keep-alive HTTP/1.1
server on 127.0.0.1 in a child process, answering 204); ``messages / receivers`` events are written
through ``lib.outbox.emit``, each fanning out to every subscription; then :func:`deliver_due` sends them all (signed, logged, through the
guarded outbound client). Prints one JSON object: ``deliveries_per_s``, ``p95_attempt_ms`` (one POST,
as the delivery log records it), ``peak_rss_mb`` of this process, and the emit rate for comparison.

    python bench/webhooks.py --messages 10000 --receivers 10
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import peak_rss_mb, scratch_database  # noqa: E402
from cryptography.fernet import Fernet  # noqa: E402

RECEIVERS = """
import sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(204)
        self.send_header("content-length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass

servers = [ThreadingHTTPServer(("127.0.0.1", 0), Handler) for _ in range(int(sys.argv[1]))]
for server in servers:
    threading.Thread(target=server.serve_forever, daemon=True).start()
print(" ".join(str(s.server_port) for s in servers), flush=True)
sys.stdin.read()
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--receivers", type=int, default=10)
    args = parser.parse_args()
    os.environ.update(
        OBSERVATORY_SECRET_KEY=Fernet.generate_key().decode(),
        OBSERVATORY_ALLOW_PRIVATE_NETWORKS="1",
    )
    from observatory_assets.defs.webhooks.delivery import deliver_due
    from observatory_assets.defs.webhooks.subscriptions import add_subscription
    from observatory_assets.lib.outbox import EXPORT_COMPLETED, emit
    from resources.postgres import engine_for

    receivers = subprocess.Popen(
        [sys.executable, "-c", RECEIVERS, str(args.receivers)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        ports = receivers.stdout.readline().split()
        with scratch_database() as url:
            engine = engine_for(url)
            with engine.begin() as conn:
                for n, port in enumerate(ports):
                    add_subscription(conn, f"http://127.0.0.1:{port}/hook", [EXPORT_COMPLETED], name=f"r{n}")
            started = time.perf_counter()
            with engine.begin() as conn:  # every emit fans out to each receiver's subscription
                for i in range(args.messages // len(ports)):
                    emit(conn, EXPORT_COMPLETED, {"export": i, "object_key": f"exports/{i}.parquet"})
            emitted_s = time.perf_counter() - started
            result = deliver_due(engine)
            attempts = sorted(result.attempt_ms)
    finally:
        receivers.stdin.close()
        receivers.wait(timeout=10)
    print(
        json.dumps(
            {
                "messages": args.messages,
                "receivers": args.receivers,
                "delivered": result.delivered,
                "deliveries_per_s": round(result.delivered / result.seconds, 1),
                "p95_attempt_ms": round(attempts[int(0.95 * (len(attempts) - 1))], 2),
                "peak_rss_mb": peak_rss_mb(),
                "messages_emitted_per_s": round(args.messages / emitted_s, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
