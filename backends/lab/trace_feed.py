"""The trace feed: a running lab's PDUs, live, over TCP, for a window (or any tool) elsewhere.

`iwlab serve --trace-feed PORT` offers it; `iwlab window --watch HOST:PORT` shows it. One JSON
object per line, UTF-8:

    lab    -> viewer   {"type": "hello", "iwlab_trace_feed": 1, "lab": ID, "nodes": [...], "last_seq": N,
                        "endpoints": {...}}   (ID names this lab run; nodes are its ladder's columns;
                        endpoints as `iwlab serve --endpoints-file` writes them)
    viewer -> lab      since SEQ          (0: everything the lab still holds)
    viewer -> lab      command LINE       (any time after that: a console command, `iwlab serve`'s)
    lab    -> viewer   {"type": "event", ...}  every PDU recorded after SEQ, oldest first, then live
                       {"type": "answer", "command": LINE, "text": "..."}  what a command did (or
                           "refused": the lab takes no commands over its feed, unless told to)
                       {"type": "gap", "after": A, "next": B}  events A+1 .. B-1 were let go by the
                           trace's bounds before this viewer read them (it fell that far behind)
                       {"type": "error", "reason": "..."}  then the lab closes the connection

An event's fields are those of `iwlab serve --trace-json` (backends/lab/report.event_dict). The
trace itself is each viewer's buffer: a viewer that reads slowly costs a cursor, never a queue,
and it is told exactly what it missed.
"""
from __future__ import annotations

import asyncio
import binascii
import json
import re
from dataclasses import dataclass
from typing import AsyncIterator, Awaitable, Callable

from iwlab.backends.lab.report import event_dict, event_from_dict
from iwlab.backends.trace import MAX_RAW, Trace, TraceEvent
from iwlab.backends.transports.listen import listen_on

VERSION = 1
MAX_REQUEST = 1024                   # bytes of one line from a viewer (its request, a command)
MAX_LINE = 2 * MAX_RAW + 1_000_000   # one event: its raw bytes in base64, and its decoded fields
REQUEST_TIMEOUT = 30.0               # seconds a viewer has to say where to start
REFUSAL_LINGER = 5.0                 # seconds a refused viewer has to take the reason and close
BATCH = 500                          # events written before waiting for the viewer to take them
_SINCE = re.compile(rb"since ([0-9]{1,18})\r?\n")


class FeedError(Exception):
    """The other end does not speak the trace feed, or broke it."""


@dataclass(frozen=True)
class Gap:
    after: int   # the last seq this viewer had
    next: int    # the seq it gets next: everything between was let go

    @property
    def lost(self) -> int:
        return self.next - self.after - 1


def encode_line(item: dict) -> bytes:
    """One line of the feed: the object as compact JSON (what JSON cannot hold, as text)."""
    return json.dumps(item, default=str, separators=(",", ":")).encode("utf-8") + b"\n"


class TraceFeed:
    """Serves one trace to up to max_viewers viewers at once. Runs on the lab's loop."""

    def __init__(self, trace: Trace, nodes: list[str], *, max_viewers: int = 16,
                 commands: Callable[[str], Awaitable[str]] | None = None) -> None:
        """commands: carries out a viewer's console command, its answer as text (None: viewers
        may only watch; a command gets "refused")."""
        self._trace = trace
        self._nodes = list(nodes)
        self._commands = commands
        self.endpoints: dict = {}   # the lab's, told to every viewer in its hello
        self.max_viewers = max_viewers
        self._servers: list[asyncio.Server] = []
        self._viewers: set[asyncio.Task] = set()
        self.port = 0

    async def start(self, hosts: str | list[str], port: int = 0) -> None:
        def protocol() -> asyncio.StreamReaderProtocol:
            return asyncio.StreamReaderProtocol(asyncio.StreamReader(limit=MAX_REQUEST), self._accept)
        self._servers = await listen_on(protocol, hosts, port)
        self.port = self._servers[0].sockets[0].getsockname()[1]

    def addresses(self) -> list[tuple[str, int]]:
        return [s.getsockname()[:2] for server in self._servers for s in server.sockets]

    @property
    def viewer_count(self) -> int:
        return len(self._viewers)

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        for task in list(self._viewers):
            task.cancel()
        await asyncio.gather(*self._viewers, return_exceptions=True)
        for server in self._servers:
            await server.wait_closed()
        self._servers = []

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.get_running_loop().create_task(self._serve(reader, writer), name="trace feed viewer")
        self._viewers.add(task)
        task.add_done_callback(self._viewers.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if len(self._viewers) > self.max_viewers:
                await _refuse(f"busy: {self.max_viewers} viewers already watch this lab", reader, writer)
                return
            writer.write(encode_line({"type": "hello", "iwlab_trace_feed": VERSION, "lab": self._trace.id,
                                "nodes": self._nodes, "last_seq": self._trace.last_seq(),
                                "endpoints": self.endpoints}))
            since = await self._read_request(reader, writer)
            if since is not None:
                await self._follow(since, reader, writer)
        except (ConnectionError, asyncio.TimeoutError):
            pass   # the viewer went away (or never asked): nothing of the lab's is lost with it
        finally:
            writer.close()

    async def _read_request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int | None:
        try:
            request = await asyncio.wait_for(reader.readline(), REQUEST_TIMEOUT)
        except ValueError:   # longer than MAX_REQUEST without a line end
            request = b"(too long)"
        match = _SINCE.fullmatch(request)
        if match is None:
            shown = request[:MAX_REQUEST].decode("ascii", "replace").strip() or "nothing"
            await _refuse(f"expected 'since SEQ', got {shown!r}", reader, writer)
            return None
        return int(match.group(1))

    async def _follow(self, cursor: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        recorded = asyncio.Event()

        def on_record(_event: TraceEvent) -> None:   # on the recording thread: wake the viewer's task
            if not recorded.is_set():
                loop.call_soon_threadsafe(recorded.set)
        unsubscribe = self._trace.subscribe(on_record)
        # The viewer's commands, answered as they come; its end of file (or reset) is how we learn it left.
        gone = loop.create_task(self._take_commands(reader, writer), name="trace feed viewer commands")
        waiting: asyncio.Task | None = None
        try:
            while not gone.done():
                recorded.clear()
                cursor = await self._send_since(cursor, writer)
                waiting = loop.create_task(recorded.wait())
                await asyncio.wait({waiting, gone}, return_when=asyncio.FIRST_COMPLETED)
                waiting.cancel()
        finally:
            unsubscribe()
            for task in (waiting, gone):
                if task is not None:
                    task.cancel()

    async def _take_commands(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                line = await reader.readuntil(b"\n")
            except asyncio.IncompleteReadError:   # the viewer left (what it began of a line goes too)
                return
            except asyncio.LimitOverrunError:      # longer than MAX_REQUEST: refused, the feed goes on
                await _skip_line(reader)
                line = b"command (too long)\n"
            text = line.decode("utf-8", "replace").strip()
            if not text.startswith("command "):
                writer.write(encode_line({"type": "answer", "command": text[:200],
                                          "text": "refused: a viewer sends 'command LINE' lines only"}))
                continue
            command = text[len("command "):]
            if self._commands is None:
                answer = "refused: this lab takes no commands over its trace feed (iwlab serve --trace-feed-control)"
            else:
                answer = await self._commands(command)
            writer.write(encode_line({"type": "answer", "command": command[:200], "text": answer}))

    async def _send_since(self, cursor: int, writer: asyncio.StreamWriter) -> int:
        # A page at a time: a viewer that comes late is not handed 500,000 events unpacked at once.
        while events := self._trace.events_since(cursor, limit=BATCH):
            if events[0].seq > cursor + 1:
                writer.write(encode_line({"type": "gap", "after": cursor, "next": events[0].seq}))
            writer.writelines(encode_line({"type": "event", **event_dict(e)}) for e in events)
            cursor = events[-1].seq
            await writer.drain()   # a slow viewer holds a cursor here, not a queue
        return cursor


async def _refuse(reason: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Say why, then close gently: what the viewer sent meanwhile is read, so it gets the reason, not a reset."""
    writer.write(encode_line({"type": "error", "reason": reason}))
    writer.write_eof()
    try:
        await asyncio.wait_for(_until_end(reader), REFUSAL_LINGER)
    except asyncio.TimeoutError:
        pass


async def _skip_line(reader: asyncio.StreamReader) -> None:
    """Drop the rest of an overlong line (up to its end)."""
    while True:
        try:
            await reader.readuntil(b"\n")
            return
        except asyncio.LimitOverrunError as exc:
            await reader.readexactly(exc.consumed)
        except asyncio.IncompleteReadError:
            return


async def _until_end(reader: asyncio.StreamReader) -> None:
    """Read and drop what the viewer sends after its request, until it closes."""
    while await reader.read(4096):
        pass


@dataclass(frozen=True)
class Answer:
    command: str
    text: str    # what the lab's console answered ("error: ..." or "refused: ..." when it did not)


@dataclass(frozen=True)
class Hello:
    lab: str         # which lab run this is: a viewer that reconnects to another one starts over
    nodes: list[str]
    last_seq: int
    endpoints: dict  # where its listeners are ({} if the lab did not say)


class TraceFeedClient:
    """A viewer: connect() (the lab's hello), then `async for item in client.items(since)`:
    TraceEvents and Gaps in order, and the Answers to its commands."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, hello: Hello) -> None:
        self._reader, self._writer = reader, writer
        self.hello = hello
        self._asked = False                # the request (since SEQ) went
        self._early: list[bytes] = []      # commands asked before it

    @classmethod
    async def connect(cls, host: str, port: int, *, timeout: float = 10.0) -> "TraceFeedClient":
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port, limit=MAX_LINE), timeout)
        try:
            first = await _read_item(reader, timeout)
            if first.get("type") == "error":
                raise FeedError(str(first.get("reason")))
            if first.get("type") != "hello" or first.get("iwlab_trace_feed") != VERSION:
                raise FeedError(f"{host}:{port} is not an iwlab trace feed (version {VERSION})")
            lab, nodes, last_seq = first.get("lab"), first.get("nodes"), first.get("last_seq")
            if not isinstance(lab, str) or not isinstance(nodes, list) \
                    or not all(isinstance(n, str) for n in nodes) or type(last_seq) is not int:
                raise FeedError("the feed's hello is damaged")
            endpoints = first.get("endpoints")
            return cls(reader, writer, Hello(lab, nodes, last_seq, endpoints if isinstance(endpoints, dict) else {}))
        except BaseException:
            writer.close()
            raise

    def command(self, line: str) -> None:
        """Ask the lab to carry out a console command; its Answer comes among the items (one asked
        before items() goes after the request, which must come first)."""
        request = f"command {' '.join(line.split())}\n".encode("utf-8")
        if self._asked:
            self._writer.write(request)
        else:
            self._early.append(request)

    async def items(self, since: int = 0) -> AsyncIterator[TraceEvent | Gap | Answer]:
        """Every event after `since`, then live, until the lab closes the feed (FeedError if it
        says why, or sends what no lab would)."""
        self._writer.write(f"since {since}\n".encode("ascii"))
        self._asked = True
        self._writer.writelines(self._early)
        self._early.clear()
        while item := await _read_item(self._reader, None):
            yield feed_item(item)

    def close(self) -> None:
        self._writer.close()

    async def aclose(self) -> None:
        """Close, and wait until the socket is."""
        self._writer.close()
        try:
            await self._writer.wait_closed()
        except OSError:
            pass


async def _read_item(reader: asyncio.StreamReader, timeout: float | None) -> dict:
    """The next line as an object; {} at the end of the feed."""
    try:
        line = await asyncio.wait_for(reader.readline(), timeout)
    except ValueError:
        raise FeedError(f"a line longer than {MAX_LINE} bytes") from None
    return decode_line(line) if line else {}


def decode_line(line: bytes) -> dict:
    """One whole line of the feed as the JSON object it must be (FeedError otherwise)."""
    if not line.endswith(b"\n"):
        raise FeedError("the feed ended in the middle of a line")
    try:
        item = json.loads(line)
    except ValueError as exc:   # JSONDecodeError and UnicodeDecodeError alike
        raise FeedError(f"a line that is not JSON ({exc})") from None
    if not isinstance(item, dict):
        raise FeedError("a line that is not a JSON object")
    return item


def feed_item(item: dict) -> TraceEvent | Gap | Answer:
    """What a line after the hello says: an event, a gap or an answer (FeedError for a refusal or junk)."""
    kind = item.get("type")
    if kind == "event":
        try:
            return event_from_dict(item)
        except (KeyError, TypeError, ValueError, binascii.Error) as exc:
            raise FeedError(f"a damaged event ({type(exc).__name__}: {exc})") from None
    if kind == "gap" and type(item.get("after")) is int and type(item.get("next")) is int:
        return Gap(item["after"], item["next"])
    if kind == "answer" and isinstance(item.get("command"), str) and isinstance(item.get("text"), str):
        return Answer(item["command"], item["text"])
    if kind == "error":
        raise FeedError(str(item.get("reason", "the lab refused")))
    raise FeedError(f"an unknown line of type {str(kind)[:40]!r}")
