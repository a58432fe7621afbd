"""Evidence for QA: JUnit XML, a self-contained HTML report (the ladder as SVG,
each PDU decoded, verdicts per requirement) and a JSON export of the trace."""
from __future__ import annotations

import base64
import binascii
import html
import importlib.metadata
import json
import socket
import time
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path

from iwlab.backends.lab.scenarios import Verdict, requirement_verdicts
from iwlab.backends.trace import TraceEvent, hex_dump

ROW = 26
PALETTE = ["#1f6feb", "#d1242f", "#1a7f37", "#8250df", "#bf8700", "#0a7ea4", "#cf222e", "#6e7781"]


def write_junit(path: Path, verdicts: list[Verdict]) -> None:
    """The verdicts as the widely used JUnit XML (Ant's format, as CI servers read it): one
    testsuite with name, timestamp (ISO 8601, no zone), hostname, tests, failures, errors and
    time; properties, one testcase per use case (failure with message and type), system-out
    and system-err, in that order."""
    started = min((v.started for v in verdicts if v.started), default=time.time())
    suite = ET.Element("testsuite", name="iwlab use cases",
                       timestamp=datetime.fromtimestamp(started, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"),
                       hostname=socket.gethostname() or "localhost", tests=str(len(verdicts)),
                       failures=str(sum(not v.passed for v in verdicts)), errors="0",
                       time=f"{sum(v.duration for v in verdicts):.3f}")
    properties = ET.SubElement(suite, "properties")
    ET.SubElement(properties, "property", name="iwlab.version", value=_version())
    for verdict in verdicts:
        case = ET.SubElement(suite, "testcase", classname="iwlab.usecases",
                             name=f"{verdict.scenario.id} {verdict.scenario.title}", time=f"{verdict.duration:.3f}")
        if not verdict.passed:
            failure = ET.SubElement(case, "failure", type="VerdictFailed",
                                    message="; ".join(r.detail for r in verdict.results if not r.passed))
            failure.text = verdict.report()
    ET.SubElement(suite, "system-out").text = "\n\n".join(v.report() for v in verdicts)
    ET.SubElement(suite, "system-err").text = ""
    ET.ElementTree(suite).write(path, encoding="utf-8", xml_declaration=True)


def _version() -> str:
    try:
        return importlib.metadata.version("iwlab")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def event_dict(event: TraceEvent) -> dict:
    return {"seq": event.seq, "time": event.time, "src": event.src, "dst": event.dst,
            "protocol": event.protocol, "summary": event.summary, "is_response": event.is_response,
            "fields": event.fields, "raw": base64.b64encode(event.raw).decode("ascii"),
            "correlation": event.correlation, "note": event.note,
            "src_address": event.src_address, "dst_address": event.dst_address, "transport": event.transport}


def write_trace_json(path: Path, events: list[TraceEvent]) -> None:
    path.write_text(json.dumps({"iwlab_trace": 1, "events": [event_dict(e) for e in events]},
                               default=str, indent=1), encoding="utf-8")


def read_trace_json(path: Path) -> list[TraceEvent]:
    """Raises ValueError (with the reason) for anything that is not an iwlab trace export."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not text: {exc}") from None
    if not isinstance(data, dict) or data.get("iwlab_trace") != 1 or not isinstance(data.get("events"), list):
        raise ValueError(f"{path}: not an iwlab trace export")
    try:
        return _events(data)
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        raise ValueError(f"{path}: a PDU in it is damaged ({type(exc).__name__}: {exc})") from None


def _events(data: dict) -> list[TraceEvent]:
    return [event_from_dict(e) for e in data["events"]]


def event_from_dict(item: dict) -> TraceEvent:
    """One PDU as event_dict() wrote it (a file or the trace feed); TypeError, ValueError,
    KeyError or binascii.Error for anything else, whoever sent it."""
    text = {name: item[name] for name in ("src", "dst", "protocol", "summary", "note")}
    if not all(isinstance(value, str) for value in text.values()):
        raise TypeError("src, dst, protocol, summary and note are text")
    seq, when, fields, correlation = item["seq"], item["time"], item["fields"], item["correlation"]
    if type(seq) is not int or not isinstance(when, (int, float)) or not isinstance(item["is_response"], bool):
        raise TypeError("seq is a whole number, time a number, is_response true or false")
    if not isinstance(fields, dict) or not isinstance(correlation, dict) \
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in correlation.items()):
        raise TypeError("fields is an object, correlation an object of text")
    return TraceEvent(seq=seq, time=float(when), is_response=item["is_response"], fields=fields,
                      raw=base64.b64decode(item["raw"], validate=True), correlation=correlation,
                      src_address=_address(item.get("src_address")), dst_address=_address(item.get("dst_address")),
                      transport=str(item.get("transport") or ""), **text)


def _address(value) -> tuple[str, int] | None:
    """A saved [host, port] (older exports have none)."""
    if value is None:
        return None
    host, port = value
    if not isinstance(host, str) or type(port) is not int or not 0 <= port <= 0xFFFF:
        raise TypeError("an address is [host, port], the port 0 to 65535")
    return host, port


def ladder_svg(events: list[TraceEvent], nodes: list[str]) -> str:
    """The ladder as SVG: a column per node, a row per PDU, dashed responses, a colour per conversation."""
    for event in events:
        for name in (event.src, event.dst):
            if name not in nodes:
                nodes.append(name)
    column, left, top = 150, 70, 40
    width, height = left + column * len(nodes), top + ROW * len(events) + 20
    colours: dict[str, str] = {}
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="DejaVu Sans, sans-serif" font-size="11">']
    for i, node in enumerate(nodes):
        x = left + column * i + column // 2
        out.append(f'<line x1="{x}" y1="{top - 10}" x2="{x}" y2="{height}" stroke="#bbb"/>')
        out.append(f'<text x="{x}" y="20" text-anchor="middle" font-weight="bold" font-size="13">'
                   f'{html.escape(node)}</text>')
    for row, event in enumerate(events):
        y = top + ROW * row + 18
        key = event.correlation.get("conversation_id") or event.correlation.get("call_id") or event.protocol
        colour = colours.setdefault(key, PALETTE[len(set(colours.values())) % len(PALETTE)])
        if event.correlation.get("call_id"):   # a response (Call-ID only) takes its request's colour
            colours.setdefault(event.correlation["call_id"], colour)
        x1 = left + column * nodes.index(event.src) + column // 2
        x2 = left + column * nodes.index(event.dst) + column // 2
        dash = ' stroke-dasharray="5,3"' if event.is_response else ""
        head = x2 - 6 if x2 > x1 else x2 + 6
        out.append(f'<a href="#pdu{event.seq}"><text x="4" y="{y}" fill="#666">{event.seq}</text>'
                   f'<line x1="{x1}" y1="{y}" x2="{x2}" y2="{y}" stroke="{colour}" stroke-width="1.6"{dash}/>'
                   f'<polygon points="{x2},{y} {head},{y - 4} {head},{y + 4}" fill="{colour}"/>'
                   f'<text x="{(x1 + x2) / 2}" y="{y - 4}" text-anchor="middle">'
                   f'{html.escape(event.summary[:70])}</text></a>')
    out.append("</svg>")
    return "\n".join(out)


def write_html(path: Path, verdicts: list[Verdict], events: list[TraceEvent], nodes: list[str],
               requirements: dict[str, str]) -> None:
    table = requirement_verdicts(verdicts, requirements)
    colour = {"passed": "#1a7f37", "failed": "#d1242f", "not exercised": "#6e7781"}
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>iwlab report</title>",
             "<style>body{font-family:sans-serif;margin:2em}td,th{padding:4px 8px;text-align:left;"
             "vertical-align:top}pre{background:#f6f8fa;padding:8px;overflow:auto}"
             ".pass{color:#1a7f37}.fail{color:#d1242f}</style></head><body>",
             "<h1>iwlab: CPM interworking use cases</h1>",
             f"<p>{sum(v.passed for v in verdicts)} of {len(verdicts)} use cases passed.</p>",
             "<h2>Requirements</h2><table><tr><th>Requirement</th><th>Verdict</th><th>Evidence</th></tr>"]
    for rid, text in requirements.items():
        state, rows = table[rid]
        links = " ".join(f"<a href='#pdu{r}'>{r}</a>" for r in sorted(set(rows)))
        parts.append(f"<tr><td><b>{rid}</b><br><small>{html.escape(text)}</small></td>"
                     f"<td style='color:{colour[state]}'>{state}</td><td>{links}</td></tr>")
    parts.append("</table><h2>Use cases</h2>")
    for verdict in verdicts:
        cls = "pass" if verdict.passed else "fail"
        parts.append(f"<h3 class='{cls}'>{'PASS' if verdict.passed else 'FAIL'} {verdict.scenario.id}: "
                     f"{html.escape(verdict.scenario.title)}</h3><p>{html.escape(verdict.scenario.flow)}</p><ul>")
        for result in verdict.results:
            parts.append(f"<li class='{'pass' if result.passed else 'fail'}'>[{', '.join(result.check.requirements)}]"
                         f" {html.escape(result.detail)}</li>")
        parts.append("</ul>")
    parts.append("<h2>Ladder</h2>" + ladder_svg(events, list(nodes)) + "<h2>PDUs</h2>")
    for event in events:
        decoded = html.escape(json.dumps(event.fields, indent=1, default=str, ensure_ascii=False))
        raw = html.escape(hex_dump(event.raw))   # bytes as bytes: NULs and binary SMPP fields stay legible
        note = f"<p><i>{html.escape(event.note)}</i></p>" if event.note else ""
        parts.append(f"<h4 id='pdu{event.seq}'>#{event.seq} {html.escape(event.src)} → {html.escape(event.dst)} "
                     f"{event.protocol}: {html.escape(event.summary)}</h4>{note}"
                     f"<details><summary>decoded</summary><pre>{decoded}</pre></details>"
                     f"<details><summary>raw bytes (hex and ASCII)</summary><pre>{raw}</pre></details>")
    parts.append("</body></html>")
    path.write_text("\n".join(parts), encoding="utf-8")
