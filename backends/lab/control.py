"""Text commands that change the running lab: `iwlab serve` reads them on stdin.

One command per line; the answer is one or more lines of text. Everything a
trainer flips in the window can be flipped here, so a headless lab with real
clients can be driven the same way.
"""
from __future__ import annotations

import shlex

from iwlab.backends.devices.cpm_phone import CpmDevice
from iwlab.backends.devices.email_client import EmailClient
from iwlab.backends.devices.sms_handset import SmsHandset
from iwlab.backends.lab import conditions
from iwlab.backends.lab.lab import Lab
from iwlab.backends.topology import SIP_TRANSPORTS

HELP = """commands:
  state USER [registered=yes|no] [capable=yes|no] [roaming=yes|no]   change a user's device conditions
        [accepting=yes|no]          a CPM phone takes messages, or declines them (603)
        [answering=yes|no]          a CPM phone answers, or answers nothing at all (a hung app: 408)
        [confirming=yes|no]         a CPM phone says delivered (IMDN), or keeps quiet (RCC.07 fallback)
        [bound=yes|no]              an SMS handset is on (bound to the SMSC) or off
  threads last|pool                 how the IWF matches SMS replies to CPM threads
  throttle N                        the SMSC answers every Nth submit_sm with ESME_RTHROTTLED (0: off)
  smsc qfull N                      ... every Nth submit_sm with ESME_RMSGQFUL (0: off)
  smsc delay MS [JITTER]            the SMSC answers (and delivers) each submit_sm MS ms late, plus up to JITTER ms
  smsc drop USER|IWF|IWF-A         cut that SMPP link now (no unbind); it rebinds by itself
  smsc drop-every N                 cut each bound link at every Nth request it sends (0: off)
  smsc refuse-binds SECONDS         answer every bind with ESME_RBINDFAIL for that long (0: off)
  mail busy SECONDS [451|452]       the mail server answers MAIL FROM with 451 4.3.2 (or 452 4.3.1,
                                    storage full) for that long (0: off)
  mail delay MS [JITTER]            the mail server sends each reply MS ms late, plus up to JITTER ms
  ordering on|off                   DEMO: off lets the IWF's conversations race (CPM-IOP-xxx-5 then fails)
  conditions                        what is set now
  restart smsc                      stop the SMSC and start a new one on the same port and store
  send FROM TO TEXT...              a simulated device sends (FROM, TO: user ids, e.g. mary peter)
  users                             who is who, and their conditions
  help                              this text"""

_YES = {"yes", "y", "on", "true", "1"}
_NO = {"no", "n", "off", "false", "0"}


class CommandError(ValueError):
    pass


def _flag(value: str, name: str) -> bool:
    value = value.lower()
    if value in _YES:
        return True
    if value in _NO:
        return False
    raise CommandError(f"{name} takes yes or no, not {value!r}")


async def run_command(lab: Lab, line: str) -> str:
    """Carry out one command on the lab's loop; returns the answer (errors too, as text)."""
    try:
        words = shlex.split(line)
    except ValueError as exc:
        return f"error: {exc}"
    if not words:
        return ""
    command, args = words[0].lower(), words[1:]
    try:
        handler = _COMMANDS.get(command)
        if handler is None:
            raise CommandError(f"unknown command {command!r}; try help")
        return await handler(lab, args)
    except CommandError as exc:
        return f"error: {exc}"
    except Exception as exc:   # noqa: BLE001 - the console keeps working after any failure
        return f"error: {type(exc).__name__}: {exc}"


async def _help(lab: Lab, args: list[str]) -> str:
    return HELP


def _user(lab: Lab, user_id: str):
    try:
        return lab.topology.user(user_id.lower())
    except KeyError:
        known = ", ".join(u.id for u in lab.topology.users)
        raise CommandError(f"no user {user_id!r}; the lab has {known}") from None


async def _state(lab: Lab, args: list[str]) -> str:
    if not args:
        raise CommandError("state USER [registered=yes|no] [capable=yes|no] [roaming=yes|no] [accepting=yes|no] "
                           "[answering=yes|no] [confirming=yes|no] [bound=yes|no] [transport=udp|tcp|tls]")
    user = _user(lab, args[0])
    changes: dict[str, bool | str] = {}
    names = {"registered": "registered", "capable": "cpm_capable", "roaming": "roaming_without_cpm",
             "accepting": "accepting", "answering": "answering", "confirming": "confirming", "bound": "bound"}
    for arg in args[1:]:
        key, sep, value = arg.partition("=")
        if sep and key == "transport":
            if value.lower() not in SIP_TRANSPORTS:
                raise CommandError(f"transport must be one of {', '.join(SIP_TRANSPORTS)}")
            changes["sip_transport"] = value.lower()
            continue
        if not sep or key not in names:
            raise CommandError(f"unknown setting {arg!r}; use registered=, capable=, roaming=, accepting=, "
                               "answering=, confirming=, bound=, transport=")
        changes[names[key]] = _flag(value, key)
    device = lab.devices.get(user.id)
    if "bound" in changes:
        handset = device if isinstance(device, SmsHandset) else lab.sms_sides.get(user.id)
        if handset is None:
            raise CommandError(f"{user.name} has no simulated SMS handset")
        await handset.set_bound(bool(changes.pop("bound")))
    if "accepting" in changes or "answering" in changes:
        if not isinstance(device, CpmDevice):
            raise CommandError(f"{user.name} has no simulated CPM phone")
        accepting, answering = changes.pop("accepting", None), changes.pop("answering", None)
        await device.set_state(accepting=None if accepting is None else bool(accepting),
                               answering=None if answering is None else bool(answering))
    if not isinstance(device, CpmDevice):
        device = lab.cpm_apps.get(user.id, device)   # a legacy user's CPM app, if given one
    if not isinstance(device, CpmDevice) and "registered" in changes:
        # A legacy user registering to CPM means a CPM app beside the handset.
        device = await lab.set_cpm_app(user.id, bool(changes["registered"]))
        if device is None:
            changes.pop("registered")
    if isinstance(device, CpmDevice):
        if changes:
            await device.set_state(**changes)   # type: ignore[arg-type]  # names and types checked above
    else:
        for name, flag in changes.items():
            setattr(user, name, flag)
    return _describe(lab, user)


def _describe(lab: Lab, user) -> str:
    server = lab.cpm_servers[user.operator]
    route = server.route_for(user)
    device = lab.devices.get(user.id)
    extra = ""
    if isinstance(device, CpmDevice) and not device.accepting:
        extra += " accepting=no"
    if isinstance(device, CpmDevice) and not device.answering:
        extra += " answering=no"
    handset = device if isinstance(device, SmsHandset) else lab.sms_sides.get(user.id)
    if handset is not None and not handset.bound:
        extra += " bound=no"
    return (f"{user.name}: registered={'yes' if server.is_registered(user) else 'no'} "
            f"capable={'yes' if user.cpm_capable else 'no'} roaming={'yes' if user.roaming_without_cpm else 'no'}"
            + (f" transport={user.sip_transport}" if user.device == "cpm" else "") + f"{extra} -> {route.reason}")


async def _users(lab: Lab, args: list[str]) -> str:
    return "\n".join(_describe(lab, user) for user in lab.topology.users)


async def _threads(lab: Lab, args: list[str]) -> str:
    if len(args) != 1 or lab.iwf is None:
        raise CommandError("threads last|pool")
    try:
        lab.iwf.threads.set_policy(args[0].lower())
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    if lab.iwf.operator.iwf is not None:          # a restarted lab keeps the choice
        lab.iwf.operator.iwf.thread_policy = args[0].lower()
    return f"SMS thread policy: {args[0].lower()}"


async def _throttle(lab: Lab, args: list[str]) -> str:
    if len(args) != 1 or not args[0].isdigit() or lab.smsc is None:
        raise CommandError("throttle N (a whole number; 0 turns it off)")
    lab.smsc.throttle_every = int(args[0])
    return f"SMSC throttles 1 submit_sm in {args[0]}" if int(args[0]) else "SMSC throttling off"


async def _send(lab: Lab, args: list[str]) -> str:
    if len(args) < 3:
        raise CommandError("send FROM TO TEXT...")
    sender, recipient, text = _user(lab, args[0]), _user(lab, args[1]), " ".join(args[2:])
    device = lab.devices.get(sender.id)
    if isinstance(device, CpmDevice):
        message = await device.send_message(recipient, text)
        return f"{sender.name} -> {recipient.name}: {message.status} {message.status_detail}".rstrip()
    if isinstance(device, SmsHandset):
        sms = await device.send_sms(recipient, text)
        return f"{sender.name} -> {recipient.name}: {sms.status}"
    if isinstance(device, EmailClient):
        address = recipient.email or (recipient.sip or "")[4:]
        item = await device.send(address, text[:60], text)
        return f"{sender.name} -> {recipient.name} <{address}>: {item.status}"
    raise CommandError(f"{sender.name}'s device is not simulated in this lab")


async def _restart(lab: Lab, args: list[str]) -> str:
    if args != ["smsc"] or lab.smsc is None:
        raise CommandError("restart smsc")
    held = await lab.restart_smsc()
    return f"SMSC restarted on its port; it holds {held} message(s) from before"


def _number(value: str, what: str) -> int:
    if not value.isdigit():
        raise CommandError(f"{what} takes a whole number, not {value!r}")
    return int(value)


async def _smsc(lab: Lab, args: list[str]) -> str:
    usage = ("smsc throttle N | smsc qfull N | smsc delay MS [JITTER] | smsc drop USER|IWF|IWF-A | "
             "smsc drop-every N | smsc refuse-binds SECONDS")
    if not args:
        raise CommandError(usage)
    what, rest = args[0].lower(), args[1:]
    try:
        if what == "throttle" and len(rest) == 1:
            conditions.set_smsc(lab, throttle_every=_number(rest[0], "throttle"))
        elif what == "qfull" and len(rest) == 1:
            conditions.set_smsc(lab, queue_full_every=_number(rest[0], "qfull"))
        elif what == "delay" and len(rest) in (1, 2):
            conditions.set_smsc(lab, delay_ms=_number(rest[0], "delay"),
                                jitter_ms=_number(rest[1], "jitter") if len(rest) == 2 else 0)
        elif what == "drop-every" and len(rest) == 1:
            conditions.set_smsc(lab, drop_every=_number(rest[0], "drop-every"))
        elif what == "refuse-binds" and len(rest) == 1:
            conditions.set_smsc(lab, refuse_binds_seconds=_number(rest[0], "refuse-binds"))
        elif what == "drop" and len(rest) == 1:
            return f"cut {conditions.drop_link(lab, rest[0])} SMPP link(s) of {rest[0]}"
        else:
            raise CommandError(usage)
    except conditions.ConditionError as exc:
        raise CommandError(str(exc)) from None
    return conditions.describe(conditions.current(lab))


async def _mail(lab: Lab, args: list[str]) -> str:
    what = args[0].lower() if args else ""
    try:
        if what == "busy" and len(args) in (2, 3):
            conditions.set_mail_busy(lab, _number(args[1], "mail busy"),
                                     _number(args[2], "mail busy's reply code") if len(args) == 3 else 451)
        elif what == "delay" and len(args) in (2, 3):
            conditions.set_mail_delay(lab, _number(args[1], "mail delay"),
                                      _number(args[2], "mail jitter") if len(args) == 3 else 0)
        else:
            raise CommandError("mail busy SECONDS [451|452] | mail delay MS [JITTER]")
    except conditions.ConditionError as exc:
        raise CommandError(str(exc)) from None
    return conditions.describe(conditions.current(lab))


async def _ordering(lab: Lab, args: list[str]) -> str:
    if len(args) != 1:
        raise CommandError("ordering on|off")
    conditions.set_ordering(lab, _flag(args[0], "ordering"))
    return conditions.describe(conditions.current(lab))


async def _conditions(lab: Lab, args: list[str]) -> str:
    return conditions.describe(conditions.current(lab))


_COMMANDS = {"help": _help, "state": _state, "users": _users, "threads": _threads, "throttle": _throttle,
             "send": _send, "restart": _restart, "smsc": _smsc, "mail": _mail, "ordering": _ordering,
             "conditions": _conditions}
