"""The Lab façade: builds the whole interworking world from a topology and
owns its lifecycle. start() binds every server, stop() closes them all.

Everything runs on one asyncio loop (whichever loop calls start()).

State: with a state folder (`iwlab serve --state-dir`, the window's folder under the user's
data folder) the lab keeps its durable store (`iwlab.db`) and Maildirs there, and a restart
delivers what was owed; `fresh=True` empties it first. Without one, the store is in memory
and the Maildirs live in a temporary folder that goes when the lab stops.
"""
from __future__ import annotations

import asyncio
import shutil
import ssl
import tempfile
import time
import weakref
from functools import partial
from pathlib import Path

from iwlab.backends.clock import lab_clock
from iwlab.backends.devices.cpm_phone import CpmDevice
from iwlab.backends.devices.email_client import EmailClient
from iwlab.backends.devices.sms_handset import SmsHandset
from iwlab.backends.directory import NodeDirectory
from iwlab.backends.nodes.conference.focus import ConferenceFocus
from iwlab.backends.nodes.content_server import ContentServer
from iwlab.backends.nodes.cpm_server.server import CpmServer
from iwlab.backends.nodes.iwf.iwf import Iwf
from iwlab.backends.nodes.mail_server import MailServer, RelayCallback
from iwlab.backends.nodes.smsc import EsmeAccount, Smsc
from iwlab.backends.protocols import sip
from iwlab.backends.store import Store
from iwlab.backends.tls import LabCA
from iwlab.backends.topology import Operator, Topology, User
from iwlab.backends.trace import Trace

Device = CpmDevice | SmsHandset | EmailClient
REPORT_GRACE_SECONDS = 60.0   # the SMSC's wait for an IWF's report beyond the IWF's message validity


class Lab:
    """One lab: builds every node and device of the topology, wires them (collaborators passed
    in), starts and stops them in order, and answers what people and tests ask (endpoints,
    holdings). Its size is the wiring of the whole world in one place, on purpose."""

    def __init__(self, topology: Topology, *, devices: str | set[str] = "all", trace: Trace | None = None,
                 state_dir: str | Path | None = None, fresh: bool = False) -> None:
        self.topology = topology
        self.host = topology.host
        self.trace = trace if trace is not None else Trace()   # (an empty one given is falsy)
        self.nodes = NodeDirectory()
        # Without a folder of the user's, the lab's files (Maildirs) live in a temporary folder
        # that is the lab's own: removed when it stops, or when it is dropped without starting.
        self._own_workdir: weakref.finalize | None = None
        if state_dir:
            self.workdir = Path(state_dir)
            self.workdir.mkdir(parents=True, exist_ok=True)
            if fresh:
                shutil.rmtree(self.workdir / "maildir", ignore_errors=True)
            self.store = Store(self.workdir / "iwlab.db")
            if fresh:
                self.store.clear()
        else:
            self.workdir = Path(tempfile.mkdtemp(prefix="iwlab-"))
            self._own_workdir = weakref.finalize(self, shutil.rmtree, self.workdir, ignore_errors=True)
            self.store = Store()
        self._device_ids = self._select_devices(devices)
        self.ca: LabCA | None = None   # made at start when the topology has TLS on
        self.cpm_servers: dict[str, CpmServer] = {}
        self.iwfs: dict[str, Iwf] = {}              # operator id -> its interworking function
        self.iwf: Iwf | None = None                 # the one beside the SMSC and the mail server (B's)
        self.smsc: Smsc | None = None
        self.devices: dict[str, Device] = {}
        self.sms_sides: dict[str, SmsHandset] = {}  # CPM users' phones as SMS handsets (bound as their number)
        self.cpm_apps: dict[str, CpmDevice] = {}   # CPM clients given to legacy users at run time
        self.running = False
        self.content = ContentServer(self.trace, self.nodes, host=self.host)
        iwf_operators = topology.iwf_operators()
        # Every operator's conference focus (group chats): beside its CPM server, which it goes through.
        self.focuses = {op.id: ConferenceFocus(op, topology, self.trace, self.nodes, host=self.host,
                                               cpm_address=partial(self._sip_address_of, op.id))
                        for op in topology.operators}
        for op in topology.operators:
            self.cpm_servers[op.id] = CpmServer(
                op, topology, self.trace, self.nodes, host=self.host,
                server_address=self._sip_address_of,
                iwf_address=partial(self._iwf_address, op.id) if op.iwf else None, store=self.store,
                focus_address=self.focuses[op.id].address)
        main = topology.iwf_operator()
        if iwf_operators:
            self.smsc = self._make_smsc()
            for op in iwf_operators:
                assert op.iwf is not None
                self.iwfs[op.id] = Iwf(op, topology, self.trace, self.nodes, host=self.host, store=self.store,
                                       smsc_address=self._smsc_address, name=op.iwf.node_name,
                                       cpm_address=partial(self._sip_address_of, op.id),
                                       # with a mail domain, an email leg toward the mail server built below
                                       mail_address=self._mail_address if op.mail_domain else None,
                                       put_content=self.content.put)
            self.iwf = self.iwfs[main.id] if main else None
        self.mail: MailServer | None = None
        if main and main.mail_domain and self.iwf and self.iwf.email:
            cpm_domains: dict[str, RelayCallback] = {op.cpm_domain: self.iwf.email.relay for op in topology.operators}
            self.mail = MailServer(
                self.trace, self.nodes, maildir_root=self.workdir / "maildir",
                mailbox_domains={main.mail_domain}, relay_domains=cpm_domains,
                known_mailboxes={u.email.lower(): u.name for u in topology.users if u.email},
                node_name_for=self._node_for_address, relay_refusal=self.iwf.email.recipient_refusal)
            self.mail.on_delivered.append(self.iwf.email.delivered)
        for user in topology.users:
            if user.id not in self._device_ids:
                continue
            if user.device == "cpm":
                op_id = user.operator
                phone = CpmDevice(user, topology, self.nodes, server_address=partial(
                    self._sip_address_of, op_id), sessions_trace=self.trace, sessions_host=self.host,
                    tls_context=self._tls_client_context)
                self.devices[user.id] = phone
                if self.smsc and user.msisdn:     # the same phone is an SMS handset too
                    side = self.sms_sides[user.id] = SmsHandset(
                        user, topology, self.nodes, smsc_address=self._smsc_address,
                        password=topology.smsc.handset_password)
                    phone.attach_sms_side(side, partial(self.sms_peer, user))
            elif user.device == "email" and self.mail and user.email:
                client = EmailClient(user, topology, self.nodes, smtp_address=self._mail_address)
                self.mail.on_delivered.append(client.delivered)
                self.devices[user.id] = client
            elif user.device == "sms" and self.smsc:
                self.devices[user.id] = SmsHandset(user, topology, self.nodes, smsc_address=self._smsc_address,
                                                   password=topology.smsc.handset_password)

    def _select_devices(self, devices: str | set[str]) -> set[str]:
        every = {u.id for u in self.topology.users}
        if devices == "all":
            return every
        if devices == "none":
            return set()
        chosen = {d.strip().lower() for d in (devices.split(",") if isinstance(devices, str) else devices)}
        unknown = chosen - every
        if unknown:
            raise ValueError(f"unknown device(s): {', '.join(sorted(unknown))}; the lab has {', '.join(sorted(every))}")
        return chosen

    def _make_smsc(self) -> Smsc:
        topology = self.topology
        return Smsc(self.trace, self.nodes, accounts=[self._iwf_account(op) for op in topology.iwf_operators()],
                    handset_password=topology.smsc.handset_password,
                    handset_numbers={u.msisdn: u.name for u in topology.users
                                     if u.device in ("sms", "cpm") and u.msisdn},
                    throttle_every=topology.smsc.throttle_every,
                    validity_seconds=topology.smsc.validity_seconds, store=self.store,
                    handset_first=self._handset_first)

    async def restart_smsc(self) -> int:
        """Stop the SMSC and start a new one on the same port and durable store, as after a crash
        and restart: it knows only what it kept (restore). Its clients rebind by themselves.
        Returns how many messages the new one holds from before."""
        assert self.smsc is not None and self.smsc.port, "a running SMSC"
        old, port = self.smsc, self.smsc.port
        await old.stop()
        self.smsc = self._make_smsc()
        self.smsc.keep_conditions_of(old)     # what a trainer set stays set
        await self.smsc.start(self.topology.hosts or [self.host], port)
        return self.smsc.pending()

    def _iwf_account(self, op: Operator) -> EsmeAccount:
        """An IWF's bind at the SMSC and the numbers routed to it: its pool (replies name their
        thread) and, for the IWF beside the SMSC, CPM users' numbers too (like an IP-SM-GW:
        SMS to a CPM user reach the IWF that hands them to CPM, unless her own SMS side takes
        them: _handset_first)."""
        assert op.iwf
        routes = [number.lstrip("+") for number in op.iwf.number_pool]
        if op is self.topology.iwf_operator():
            routes = [u.msisdn for u in self.topology.users if u.device == "cpm" and u.msisdn] + routes
        # The SMSC waits for the IWF's report a little longer than the IWF keeps trying CPM: the
        # IWF's own EXPIRED comes first; the SMSC's only if the IWF never reports.
        return EsmeAccount(system_id=op.iwf.system_id, password=op.iwf.password, node_name=op.iwf.node_name,
                           routes=routes, end_to_end_receipts=op.iwf.end_to_end_receipts,
                           report_seconds=op.iwf.message_validity_seconds + REPORT_GRACE_SECONDS)

    def _handset_first(self, digits: str, bound: bool) -> str | None:
        """An SMS to a CPM user's number goes to her phone's SMS side while CPM cannot reach her:
        roaming without CPM, or not registered with the SMS side bound (Smsc.route says why)."""
        user = self.topology.user_by_number(digits)
        if user is None or user.device != "cpm":
            return None
        if user.roaming_without_cpm:
            return f"{user.name} is roaming in a network without CPM"
        server = self.cpm_servers.get(user.operator)
        if bound and server is not None and not server.is_registered(user):
            return f"{user.name} is not registered to CPM, her phone takes SMS"
        return None

    def sms_peer(self, user: User, number: str) -> User | None:
        """Who an SMS to a phone's SMS side is from: a pool number stands for the person whose
        message the IWF sent from it (the thread map says), any other number for its owner."""
        digits = number.lstrip("+")
        for iwf in self.iwfs.values():
            if iwf.threads.is_pool_number(digits) and user.msisdn:
                owner = iwf.threads.pool_owner(user.msisdn, digits)
                return self.topology.user_by_uri(owner.cpm_uri) if owner else None
        return self.topology.user_by_number(digits)

    def _node_for_address(self, address: str) -> str | None:
        user = self.topology.user_by_email(address)
        return user.name if user else None

    def _tls_client_context(self) -> ssl.SSLContext | None:
        return self.ca.client_context() if self.ca else None

    def _sip_address_of(self, operator_id: str, transport: str = "tcp") -> tuple[str, int] | None:
        """An operator's CPM server: its listener for `transport` on the lab's first address."""
        server = self.cpm_servers.get(operator_id)
        if server is None or not server.port:
            return None
        listener = next((item for item in server.sip.listeners if item.transport == transport), None)
        return (listener.host, listener.port) if listener else None

    def _smsc_address(self) -> tuple[str, int]:
        assert self.smsc is not None and self.smsc.port, "the SMSC starts before its clients"
        return self.host, self.smsc.port

    def _mail_address(self) -> tuple[str, int] | None:
        return (self.host, self.mail.port) if self.mail and self.mail.port else None

    def _iwf_address(self, operator_id: str) -> tuple[str, int] | None:
        iwf = self.iwfs.get(operator_id)
        return (self.host, iwf.port) if iwf and iwf.port else None

    def _tell_iwf_of(self, user: User) -> None:
        """The registrar tells the nodes: what an IWF holds for a user goes once they are back."""
        if user.cpm_uri:
            for iwf in self.iwfs.values():
                iwf.cpm.recipient_registered(user.cpm_uri)

    # -- lifecycle ------------------------------------------------------------------
    async def start(self) -> None:
        for server in self.cpm_servers.values():
            if self._tell_iwf_of not in server.binding_listeners:
                server.binding_listeners.append(self._tell_iwf_of)
        hosts = self.topology.hosts or [self.host]
        if self.topology.tls and self.ca is None:
            names = [op.cpm_domain for op in self.topology.operators] + hosts + ["localhost"]
            self.ca = LabCA(names, self.workdir)
        tls = self.ca.server_context() if self.ca else None
        try:
            for op in self.topology.operators:
                await self.cpm_servers[op.id].start(op.sip_port, hosts=hosts, tls=tls, tls_port=op.sip_tls_port or 0)
            for focus in self.focuses.values():
                await focus.start(hosts)
            await self.content.start(self.topology.content_port)
            smsc_op = self.topology.smsc_operator()
            if self.smsc and smsc_op:
                await self.smsc.start(hosts, smsc_op.smpp_port or 0)
            for op_id, iwf in self.iwfs.items():
                op = self.topology.operator(op_id)
                await iwf.start(op.iwf_sip_port or 0, hosts=hosts, tls=tls, tls_port=op.iwf_sip_tls_port or 0)
            main = self.topology.iwf_operator()
            if self.mail and main:
                await self.mail.start(hosts, main.smtp_port or 0)
            for device in [*self.devices.values(), *self.sms_sides.values()]:
                await device.start()
            for iwf in self.iwfs.values():
                if iwf.sms.esme:
                    await iwf.sms.esme.wait_bound(timeout=10)
            for device in [*self.devices.values(), *self.sms_sides.values()]:
                if isinstance(device, SmsHandset) and device.esme:
                    await device.esme.wait_bound(timeout=10)
        except BaseException:
            await self.stop()
            raise
        self.running = True

    async def stop(self) -> None:
        # A trainer may have been stepping: nothing waits at the gate and time runs again, or the
        # goodbyes (unbind, BYE) would wait for a Next that never comes.
        self.trace.gate.open()
        clock = lab_clock()
        if clock is not None:
            clock.run_freely()
        for device in [*self.devices.values(), *self.sms_sides.values(), *self.cpm_apps.values()]:
            await device.stop()
        for iwf in self.iwfs.values():
            await iwf.stop()
        for focus in self.focuses.values():
            await focus.stop()
        await self.content.stop()
        if self.smsc:
            await self.smsc.stop()
        if self.mail:
            await self.mail.stop()
        for server in self.cpm_servers.values():
            await server.stop()
        self.running = False
        # Let transports finish closing so no socket outlives the lab.
        await asyncio.sleep(0)
        self.store.close()
        if self._own_workdir is not None:
            self._own_workdir()   # runs once: the temporary folder goes with the lab

    # -- what people and tests use ---------------------------------------------------
    def endpoints(self) -> dict:
        """Every listener, for people and tools (the endpoints table, `--endpoints-file`)."""
        here = lambda port: sip.hostport(self.host, port)   # noqa: E731
        result: dict = {"sip": {op.cpm_domain: here(self.cpm_servers[op.id].port) for op in self.topology.operators}}
        listeners: list[dict] = []
        for op in self.topology.operators:
            listeners += [{"node": op.node_name, "domain": op.cpm_domain, "protocol": "sip",
                           "transport": item.transport, "address": item.address}
                          for item in self.cpm_servers[op.id].sip.listeners]
        if self.iwf:
            result["iwf_sip"] = here(self.iwf.port)
        for iwf in self.iwfs.values():
            listeners += [{"node": iwf.name, "domain": iwf.operator.cpm_domain, "protocol": "sip",
                           "transport": item.transport, "address": item.address} for item in iwf.sip.listeners]
        hosts = self.topology.hosts or [self.host]
        if self.content.port:
            result["content"] = here(self.content.port)
            listeners.append({"node": self.content.name, "protocol": "http", "transport": "tcp",
                              "address": result["content"]})
        if self.smsc:
            result["smpp"] = here(self.smsc.port)
            listeners += [{"node": "SMSC", "protocol": "smpp", "transport": "tcp",
                           "address": sip.hostport(host, self.smsc.port)} for host in hosts]
        if self.mail:
            result["smtp"] = here(self.mail.port)
            result["maildir"] = str(self.mail.maildir_root)
            listeners += [{"node": "Mail", "domain": self.mail.hostname, "protocol": "smtp", "transport": "tcp",
                           "address": sip.hostport(host, self.mail.port)} for host in hosts]
        result["listeners"] = listeners
        if self.ca is not None:
            result["ca"] = str(self.ca.ca_file)
        return result

    def holdings(self) -> str:
        """What the nodes hold for later, in a line: "IWF sms out 3 (oldest 12 s) · SMSC held 1" ("" for nothing)."""
        now = time.time()
        parts = [f"{owner} {count} (oldest {now - oldest:.0f} s)" for owner, (count, oldest)
                 in sorted(self.store.holdings().items()) if count and oldest is not None]
        return " · ".join(parts)

    def device(self, user_id: str) -> Device:
        return self.devices[user_id]

    async def set_cpm_app(self, user_id: str, installed: bool) -> CpmDevice | None:
        """Give a legacy user a CPM client beside their handset (a trainer's switch), or take it away.

        It registers to the user's home CPM server like any phone, with the CPM
        feature tag only while the user's device is CPM-capable.
        """
        user = self.topology.user(user_id)
        app = self.cpm_apps.get(user_id)
        if installed and app is None and user.device != "cpm":
            app = self.cpm_apps[user_id] = CpmDevice(
                user, self.topology, self.nodes, server_address=partial(self._sip_address_of, user.operator),
                tls_context=self._tls_client_context)
            user.cpm_registered = True
            await app.start()
        elif not installed and app is not None:
            if app.registered:
                await app.deregister()
            await app.stop()
            del self.cpm_apps[user_id]
            user.cpm_registered = False
            app = None
        return app

    def user(self, user_id: str) -> User:
        return self.topology.user(user_id)
