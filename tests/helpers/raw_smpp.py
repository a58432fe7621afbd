"""A real smpplib client in a reader thread, as an outside handset would be."""
from __future__ import annotations

import queue
import socket
import threading

import smpplib.client
import smpplib.consts
import smpplib.exceptions


class SmppHandset:
    def __init__(self, address: str, system_id: str, password: str = "iwlab") -> None:
        host, port = address.rsplit(":", 1)
        self.client = smpplib.client.Client(host, int(port), timeout=None, allow_unknown_opt_params=True)
        self.received: "queue.Queue" = queue.Queue()
        self.responses: "queue.Queue" = queue.Queue()
        self.client.set_message_received_handler(self._on_deliver)
        self.client.set_message_sent_handler(lambda pdu, **_: self.responses.put(pdu))
        self.client.set_error_pdu_handler(lambda pdu: None)
        self.client.connect()
        self.client._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # the reader thread answers deliver_sm while a test submits: one writer at a time
        lock, send = threading.Lock(), self.client.send_pdu

        def locked_send(pdu):
            with lock:
                return send(pdu)
        self.client.send_pdu = locked_send
        self.client.bind_transceiver(system_id=system_id, password=password)
        self._reader = threading.Thread(target=self._read, daemon=True, name="test-handset-read")
        self._reader.start()

    def _on_deliver(self, pdu):
        self.received.put(pdu)

    def _read(self) -> None:
        try:
            while True:
                self.client.read_once(auto_send_enquire_link=False)
        except (smpplib.exceptions.ConnectionError, OSError, AttributeError):
            pass

    def next_message(self, timeout: float = 10.0):
        return self.received.get(timeout=timeout)

    def close(self) -> None:
        try:
            self.client._socket.shutdown(2)
        except OSError:
            pass
        self._reader.join(5)
        self.client.disconnect()
