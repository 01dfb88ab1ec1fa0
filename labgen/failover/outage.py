"""How long traffic stopped: a probe stream's record (`ping -D`) and the moment of an event
(a cut, a restore) -> the outage and the probes lost. Pure arithmetic, one clock: the node
that sends the probes also timestamps the event (failover.py), so no two clocks are compared.

ping -D prints each reply with the time it arrived (`[EPOCH] 64 bytes from ...: icmp_seq=N
... time=RTT ms`); a probe's send time is that minus its round trip. A probe with no reply
has no line: its send time is interpolated from its answered neighbours by sequence number
(ping sends them at a fixed interval)."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

_REPLY = re.compile(r"^\[(\d+\.\d+)\] \d+ bytes from \S+ icmp_seq=(\d+) ttl=\d+ time=([\d.]+) ms(.*)$")
# ping -O: printed when the next probe goes out and this one has no reply yet (it may still
# come): proof that the probe was sent, and about when.
_NO_ANSWER = re.compile(r"^\[(\d+\.\d+)\] no answer yet for icmp_seq=(\d+)")
_SENT = re.compile(r"(\d+) packets transmitted")


@dataclass(frozen=True)
class Probe:
    seq: int
    sent: float                 # seconds since the epoch, on the sending node's clock
    answered: float | None      # when its reply arrived; None: lost (or still in flight)


@dataclass(frozen=True)
class Record:
    probes: tuple[Probe, ...]   # every probe known to be sent, by seq from 1
    duplicates: int             # replies seen twice: frames looping somewhere

    @property
    def last_seq(self) -> int:
        return self.probes[-1].seq if self.probes else 0

    def through_last_answer(self) -> Record:
        """Without the probes after the last answered one: those still in flight when the
        stream was stopped (only once traffic was seen back: else they are the loss)."""
        last = max((p.seq for p in self.probes if p.answered is not None), default=0)
        return Record(tuple(p for p in self.probes if p.seq <= last), self.duplicates)

    def answered_after(self, seq: int) -> int:
        """How many probes later than `seq` were answered."""
        return sum(1 for p in self.probes if p.seq > seq and p.answered is not None)


def parse(text: str, interval: float) -> Record:
    """`ping -D -n -O` output -> every probe it sent, with its send time: an answered one's
    from its reply, a lost one's interpolated between its answered neighbours (or from its
    "no answer yet" line, printed as the next probe went out, when none follows it)."""
    replies: dict[int, tuple[float, float]] = {}
    pending: dict[int, float] = {}
    dups = 0
    for line in text.splitlines():
        line = line.strip()
        m = _REPLY.match(line)
        if m:
            seq, arrived, rtt = int(m.group(2)), float(m.group(1)), float(m.group(3)) / 1000
            if "DUP!" in m.group(4) or seq in replies:
                dups += 1
            else:
                replies[seq] = (arrived - rtt, arrived)
            continue
        m = _NO_ANSWER.match(line)
        if m:
            pending[int(m.group(2))] = float(m.group(1)) - interval
    sent = _SENT.search(text)
    last = max([*replies, *pending, int(sent.group(1)) if sent else 0], default=0)
    known = sorted(replies)
    probes = []
    i = 0       # index in `known` of the first answered seq >= the current one
    for seq in range(1, last + 1):
        while i < len(known) and known[i] < seq:
            i += 1
        if i < len(known) and known[i] == seq:
            probes.append(Probe(seq, *replies[seq]))
            continue
        before = known[i - 1] if i > 0 else None
        after = known[i] if i < len(known) else None
        if before is not None and after is not None:
            t0, t1 = replies[before][0], replies[after][0]
            t = t0 + (t1 - t0) * (seq - before) / (after - before)
        elif seq in pending:
            t = pending[seq]
        elif before is not None:
            t = replies[before][0] + (seq - before) * interval
        elif after is not None:
            t = replies[after][0] - (after - seq) * interval
        else:
            t = math.nan        # nothing to place it by: in no window
        probes.append(Probe(seq, t, None))
    return Record(tuple(probes), dups)


@dataclass(frozen=True)
class Outage:
    seconds: float | None       # None: no probe was answered after the event's losses
    lost: int
    back_seq: int | None        # the first probe answered once traffic was back

    @property
    def ms(self) -> float | None:
        return None if self.seconds is None else round(self.seconds * 1000, 1)


def outage(record: Record, event: float, until: float = math.inf, since: float = -math.inf) -> Outage:
    """The outage an event caused: the probes sent after the last probe answered before the
    event (one sent just before it may be lost to it) and before `until` (the next event);
    lost = those without a reply; the outage runs from the event to the reply of the first
    probe answered after the last lost one (traffic that came back and stopped again counts
    as one outage to its end), and is 0 when none was lost (the stream's resolution is its
    interval). `until` counts (a probe sent then is this event's); `since`: no probe sent
    before it or then counts (it is the previous event's)."""
    before = [p.sent for p in record.probes if p.sent < event and p.answered is not None]
    start = max([since, *before])
    # `until` is the send time of a probe (cut_and_restore's meeting point), which is this
    # event's: the first answer after the losses may be that very probe.
    window = [p for p in record.probes if start < p.sent <= until]
    lost = [p for p in window if p.answered is None]
    if not lost:
        return Outage(0.0, 0, None)
    back = next((p for p in window if p.seq > lost[-1].seq and p.answered is not None), None)
    if back is None or back.answered is None:
        return Outage(None, len(lost), None)
    return Outage(max(0.0, back.answered - event), len(lost), back.seq)


def cut_and_restore(record: Record, cut: float, restore: float, back: bool = True) -> tuple[Outage, Outage]:
    """The outages of a cut and of the restore after it, each probe counted once. `back`:
    whether traffic was seen back before the restore (failover watched for it). If it was,
    the two windows meet at the last probe answered before the restore (a probe lost after
    it is the restore's); if not, the cut's outage has no end (a probe sent just after the
    cut, still in flight before the link went down, was answered: it is no recovery) and the
    restore's window starts at the restore."""
    if not back:
        before = [p.sent for p in record.probes if p.sent < cut and p.answered is not None]
        start = max(before, default=-math.inf)
        lost = sum(1 for p in record.probes if start < p.sent < restore
                   and (p.answered is None or p.answered >= restore))
        return Outage(None, lost, None), outage(record, restore, since=restore)
    answered = [p.sent for p in record.probes if cut < p.sent < restore
                and p.answered is not None and p.answered < restore]
    meet = max(answered) if answered else restore
    return outage(record, cut, until=meet), outage(record, restore, since=meet)
