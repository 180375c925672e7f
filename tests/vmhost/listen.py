"""A guest program for network tests: serves its "private port" and waits."""

from __future__ import annotations

import socket
import threading
import time

PORT = 7000


def serve() -> None:
    server = socket.create_server(("0.0.0.0", PORT))
    while True:
        conn, _ = server.accept()
        conn.close()


if __name__ == "__main__":
    threading.Thread(target=serve, daemon=True).start()
    while True:
        time.sleep(60)
