"""A TCP forwarder that tests can cut and restore, to take a real service "down" for one
client without stopping it for everyone else."""

from __future__ import annotations

import contextlib
import socket
import threading


class TcpProxy:
    def __init__(self, target_host: str, target_port: int):
        self.target = (target_host, target_port)
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(128)
        self.port = self.listener.getsockname()[1]
        self.enabled = True
        self.stalled = False  # a black hole: connections stay open, nothing gets through
        self._held: list[socket.socket] = []
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.enabled:
                client.close()
                continue
            if self.stalled:
                self._held.append(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._connections.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                if not self.stalled:
                    sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
            with self._lock:
                self._connections.difference_update((source, sink))

    def disable(self) -> None:
        """Refuse new connections and cut the open ones."""
        self.enabled = False
        with self._lock:
            for s in list(self._connections):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
            self._connections.clear()

    def enable(self) -> None:
        self.enabled = True

    def stall(self) -> None:
        """Keep connections open but let nothing through (a network partition, not a
        refusal): clients see timeouts."""
        self.stalled = True

    def resume(self) -> None:
        """End a stall: cut what was held or half-delivered, forward new connections."""
        self.stalled = False
        for s in self._held:
            s.close()
        self._held.clear()
        self.disable()
        self.enable()

    def close(self) -> None:
        self._closed = True
        self.disable()
        self.listener.close()
