"""The trace as pcapng, for Wireshark and tshark: every PDU as the TCP or UDP payload it was.

Each event that knows its two ends (address and port, recorded by the end that accepted
the connection) becomes one packet on link type "raw IP" (IPv4 or IPv6 by address), with
its trace timestamp. A TCP flow gets a three-way handshake before its first payload and
sequence/acknowledgement numbers that advance with every byte, so tshark follows and
reassembles the streams (SIP and SMTP over several segments, SMPP PDUs). Events without
addresses (notes such as "connection lost", traces from older exports) are left out.

Sans-I/O: events in, bytes out. Wireshark decodes SIP on 5060/5062, SMPP on 2775 and
MSRP by heuristics; SMTP on the lab's 2525 needs `-d tcp.port==2525,smtp`.
"""
from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import Iterable

from iwlab.backends.trace import TraceEvent

LINKTYPE_RAW = 101          # raw IPv4 / IPv6, by the version nibble
MAX_SEGMENT = 65_000        # bytes of payload per packet (an IP packet holds 65,535)
_SYN, _ACK, _PSH = 0x02, 0x10, 0x08


def _block(block_type: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    length = 12 + len(body)
    return struct.pack("<II", block_type, length) + body + struct.pack("<I", length)


def _section_header() -> bytes:
    return _block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))


def _interface() -> bytes:
    option_tsresol = struct.pack("<HHB", 9, 1, 6) + b"\0\0\0"      # microseconds
    return _block(0x00000001, struct.pack("<HHI", LINKTYPE_RAW, 0, 0) + option_tsresol + b"\0\0\0\0")


def _packet(timestamp: float, packet: bytes) -> bytes:
    micros = int(timestamp * 1_000_000)
    head = struct.pack("<IIIII", 0, micros >> 32, micros & 0xFFFFFFFF, len(packet), len(packet))
    return _block(0x00000006, head + packet)


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _ip(src: str, dst: str, protocol: int, payload: bytes) -> bytes:
    a, b = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    if a.version == 4:
        head = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, 0x4000, 64, protocol, 0,
                           a.packed, b.packed)
        head = head[:10] + struct.pack("!H", _checksum(head)) + head[12:]
        return head + payload
    return struct.pack("!IHBB16s16s", 0x60000000, len(payload), protocol, 64, a.packed, b.packed) + payload


def _pseudo_header(src: str, dst: str, protocol: int, length: int) -> bytes:
    a, b = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    if a.version == 4:
        return a.packed + b.packed + struct.pack("!BBH", 0, protocol, length)
    return a.packed + b.packed + struct.pack("!IxxxB", length, protocol)


def _tcp(src: tuple[str, int], dst: tuple[str, int], seq: int, ack: int, flags: int, payload: bytes) -> bytes:
    head = struct.pack("!HHIIBBHHH", src[1], dst[1], seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 5 << 4, flags,
                       65535, 0, 0)
    check = _checksum(_pseudo_header(src[0], dst[0], 6, len(head) + len(payload)) + head + payload)
    return _ip(src[0], dst[0], 6, head[:16] + struct.pack("!H", check) + head[18:] + payload)


def _udp(src: tuple[str, int], dst: tuple[str, int], payload: bytes) -> bytes:
    head = struct.pack("!HHHH", src[1], dst[1], 8 + len(payload), 0)
    check = _checksum(_pseudo_header(src[0], dst[0], 17, len(head) + len(payload)) + head + payload) or 0xFFFF
    return _ip(src[0], dst[0], 17, head[:6] + struct.pack("!H", check) + payload)


@dataclass
class _Flow:
    next_seq: dict[tuple[str, int], int]    # per direction: the next sequence number to send


def _normal(address: tuple[str, int]) -> tuple[str, int]:
    host = address[0].strip("[]")
    if host in ("localhost", ""):
        host = "127.0.0.1"
    return host, int(address[1])


def to_pcapng(events: Iterable[TraceEvent]) -> bytes:
    """pcapng bytes of every event that knows its addresses, in trace order."""
    out = [_section_header(), _interface()]
    flows: dict[frozenset, _Flow] = {}
    for event in events:
        if event.src_address is None or event.dst_address is None or not event.raw:
            continue
        try:
            src, dst = _normal(event.src_address), _normal(event.dst_address)
            ipaddress.ip_address(src[0])
            ipaddress.ip_address(dst[0])
        except ValueError:
            continue
        if event.transport == "udp":
            out.append(_packet(event.time, _udp(src, dst, event.raw)))
            continue
        key = frozenset((src, dst))
        flow = flows.get(key)
        if flow is None:   # a handshake first, so tshark sees the whole stream from its start
            flow = flows[key] = _Flow({src: 1001, dst: 5001})
            out.append(_packet(event.time, _tcp(src, dst, 1000, 0, _SYN, b"")))
            out.append(_packet(event.time, _tcp(dst, src, 5000, 1001, _SYN | _ACK, b"")))
            out.append(_packet(event.time, _tcp(src, dst, 1001, 5001, _ACK, b"")))
        for start in range(0, len(event.raw), MAX_SEGMENT):
            piece = event.raw[start:start + MAX_SEGMENT]
            seq, ack = flow.next_seq[src], flow.next_seq[dst]
            out.append(_packet(event.time, _tcp(src, dst, seq, ack, _PSH | _ACK, piece)))
            flow.next_seq[src] = seq + len(piece)
    return b"".join(out)
