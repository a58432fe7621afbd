"""Conditions the lab is told to suffer, as a trainer or a QA engineer sets them: a throttling or
full SMSC, slow and jittery SMSC answers, a link cut now or at every Nth request, binds refused
for a while, a busy or slow mail server, a CPM phone that answers nothing, and the IWF's
ordering demo switch. The window's conditions panel and `iwlab serve`'s commands both use this;
each condition shows on the ladder where it acts (the note of the PDU it changes).
Runs on the lab's loop.
"""
from __future__ import annotations

from dataclasses import dataclass

from iwlab.backends import clock
from iwlab.backends.devices.cpm_phone import CpmDevice
from iwlab.backends.lab.lab import Lab
from iwlab.backends.nodes.mail_server import BUSY_REPLIES


class ConditionError(ValueError):
    pass


@dataclass(frozen=True)
class Settings:
    """What is set now (0 / True: nothing unusual)."""
    throttle_every: int = 0
    queue_full_every: int = 0
    delay_ms: int = 0
    jitter_ms: int = 0
    mail_busy_seconds: float = 0.0
    mail_busy_code: int = 451               # or 452: storage full
    ordering: bool = True
    drop_every: int = 0
    refuse_binds_seconds: float = 0.0
    mail_delay_ms: int = 0
    mail_jitter_ms: int = 0
    not_answering: tuple[str, ...] = ()     # the user ids of CPM phones that answer nothing


def _left(until: float) -> float:
    return max(until - clock.monotonic(), 0.0)


def current(lab: Lab) -> Settings:
    smsc, mail = lab.smsc, lab.mail
    return Settings(smsc.throttle_every if smsc else 0, smsc.queue_full_every if smsc else 0,
                    smsc.answer_delay_ms if smsc else 0, smsc.answer_jitter_ms if smsc else 0,
                    _left(mail.busy_until) if mail else 0.0, mail.busy_code if mail else 451,
                    all(iwf.sms.outbox.ordering_enabled for iwf in lab.iwfs.values()),
                    smsc.drop_every if smsc else 0, _left(smsc.refuse_binds_until) if smsc else 0.0,
                    mail.answer_delay_ms if mail else 0, mail.answer_jitter_ms if mail else 0,
                    tuple(user_id for user_id, device in sorted(lab.devices.items())
                          if isinstance(device, CpmDevice) and not device.answering))


def _whole(value: int, what: str) -> int:
    if value < 0 or value > 1_000_000:
        raise ConditionError(f"{what} takes a whole number from 0 to 1000000")
    return value


def set_smsc(lab: Lab, *, throttle_every: int | None = None, queue_full_every: int | None = None,
             delay_ms: int | None = None, jitter_ms: int | None = None, drop_every: int | None = None,
             refuse_binds_seconds: float | None = None) -> None:
    if lab.smsc is None:
        raise ConditionError("this lab has no SMSC")
    if drop_every is not None:
        if drop_every == 1:
            raise ConditionError("drop every takes 2 or more (at 1 no request would ever be taken), or 0 for off")
        lab.smsc.drop_every = _whole(drop_every, "drop every")
    if refuse_binds_seconds is not None:
        lab.smsc.refuse_binds_until = clock.monotonic() + _seconds(refuse_binds_seconds, "refuse binds") \
            if refuse_binds_seconds else 0.0
    if throttle_every is not None:
        lab.smsc.throttle_every = _whole(throttle_every, "throttle")
    if queue_full_every is not None:
        lab.smsc.queue_full_every = _whole(queue_full_every, "queue-full")
    if delay_ms is not None:
        lab.smsc.answer_delay_ms = _whole(delay_ms, "delay")
    if jitter_ms is not None:
        lab.smsc.answer_jitter_ms = _whole(jitter_ms, "jitter")


def drop_link(lab: Lab, user_or_node: str) -> int:
    """Cut the SMPP link of a handset (user id) or of an IWF (its node name: IWF, IWF-A) now."""
    if lab.smsc is None:
        raise ConditionError("this lab has no SMSC")
    wanted = user_or_node.lower()
    system_ids = [iwf.operator.iwf.system_id for iwf in lab.iwfs.values()
                  if iwf.operator.iwf and wanted == iwf.name.lower()]
    user = next((u for u in lab.topology.users if u.id == wanted), None)
    if user is not None and user.msisdn:
        system_ids.append(user.msisdn)
    if not system_ids:
        raise ConditionError(f"no SMPP link for {user_or_node!r}: a handset's user id, or an IWF's name")
    return sum(lab.smsc.drop(system_id) for system_id in system_ids)


def _seconds(value: float, what: str) -> float:
    if not 0 <= value <= 86_400:
        raise ConditionError(f"{what} takes seconds from 0 to 86400")
    return value


def set_mail_busy(lab: Lab, seconds: float, code: int = 451) -> None:
    if lab.mail is None:
        raise ConditionError("this lab has no mail server")
    if code not in BUSY_REPLIES:
        raise ConditionError("mail busy answers 451 (not accepting) or 452 (storage full)")
    lab.mail.busy_code = code
    lab.mail.busy_until = clock.monotonic() + _seconds(seconds, "mail busy") if seconds else 0.0


def set_mail_delay(lab: Lab, delay_ms: int, jitter_ms: int = 0) -> None:
    if lab.mail is None:
        raise ConditionError("this lab has no mail server")
    lab.mail.answer_delay_ms = _whole(delay_ms, "mail delay")
    lab.mail.answer_jitter_ms = _whole(jitter_ms, "mail jitter")


def set_ordering(lab: Lab, on: bool) -> None:
    """The IWF's ordering: off is a DEMONSTRATION of a gateway whose conversations race (windowed
    submits, retries out of turn); CPM-IOP-xxx-5 then fails with its evidence."""
    for iwf in lab.iwfs.values():
        iwf.sms.outbox.ordering_enabled = on


def apply(lab: Lab, settings: Settings) -> None:
    """Set everything as settings says (a scenario's conditions, and giving back what was set
    before it); each part the lab lacks is left out."""
    if lab.smsc is not None:
        set_smsc(lab, throttle_every=settings.throttle_every, queue_full_every=settings.queue_full_every,
                 delay_ms=settings.delay_ms, jitter_ms=settings.jitter_ms, drop_every=settings.drop_every,
                 refuse_binds_seconds=settings.refuse_binds_seconds)
    if lab.mail is not None:
        set_mail_busy(lab, settings.mail_busy_seconds, settings.mail_busy_code)
        set_mail_delay(lab, settings.mail_delay_ms, settings.mail_jitter_ms)
    set_ordering(lab, settings.ordering)
    for user_id, device in lab.devices.items():
        if isinstance(device, CpmDevice):
            device.answering = user_id not in settings.not_answering


def describe(settings: Settings) -> str:
    parts = []
    if settings.throttle_every:
        parts.append(f"SMSC throttles: ESME_RTHROTTLED, 1 in {settings.throttle_every}")
    if settings.queue_full_every:
        parts.append(f"SMSC queue full: ESME_RMSGQFUL, 1 in {settings.queue_full_every}")
    if settings.delay_ms or settings.jitter_ms:
        parts.append(f"SMSC answers {settings.delay_ms} ms late" +
                     (f" (+ up to {settings.jitter_ms} ms jitter)" if settings.jitter_ms else ""))
    if settings.drop_every:
        parts.append(f"SMSC cuts a link at 1 request in {settings.drop_every}")
    if settings.refuse_binds_seconds:
        parts.append(f"SMSC refuses binds (ESME_RBINDFAIL) for {settings.refuse_binds_seconds:.0f} s more")
    if settings.mail_busy_seconds:
        reply = BUSY_REPLIES[settings.mail_busy_code].split(" ", 2)
        parts.append(f"mail server busy ({reply[0]} {reply[1]}) for {settings.mail_busy_seconds:.0f} s more")
    if settings.mail_delay_ms or settings.mail_jitter_ms:
        parts.append(f"mail server answers {settings.mail_delay_ms} ms late" +
                     (f" (+ up to {settings.mail_jitter_ms} ms jitter)" if settings.mail_jitter_ms else ""))
    for user_id in settings.not_answering:
        parts.append(f"the CPM phone of {user_id} answers nothing (its server answers 408 after Timer F)")
    if not settings.ordering:
        parts.append("DEMO: IWF ordering off (conversations race)")
    return "; ".join(parts) or "no conditions: the lab runs as it should"
