"""Outage arithmetic from a probe stream's own timestamps (outage.py): a real `ping -D -O`
stream recorded across a cut and a restore, and edits of the cases it must tell apart."""
from __future__ import annotations

import pytest
from support import OUTPUTS

from labgen.failover.outage import Record, cut_and_restore, outage, parse

RECORDED = OUTPUTS / "ping-stream-b12-cut-and-restored.txt"
# When node1's b12 went down and up (date +%s.%N on node1, the clock ping -D used).
CUT, RESTORE = 1796468591.384554085, 1796468591.697159684


def stream(*lines: tuple[int, float | None, float]) -> str:
    """ping -D -O lines for (seq, send time, rtt ms), None: no reply ("no answer yet" when the
    next one went out, 10 ms later)."""
    out = []
    for seq, sent, rtt in lines:
        if sent is None:
            continue
        if rtt < 0:
            out.append(f"[{sent + 0.010:.6f}] no answer yet for icmp_seq={seq}")
        else:
            out.append(f"[{sent + rtt / 1000:.6f}] 64 bytes from 192.168.10.10: icmp_seq={seq} ttl=64 time={rtt:.2f} ms")
    return "\n".join(out)


def steady(n: int, t0: float = 100.0, lost: set[int] = frozenset(), rtt: float = 1.0) -> str:
    return stream(*[(s, t0 + (s - 1) * 0.01, -1 if s in lost else rtt) for s in range(1, n + 1)])


def test_recorded_stream_one_probe_lost_on_cut_one_on_restore():
    rec = parse(RECORDED.read_text(), 0.01)
    assert rec.last_seq == 98 and rec.duplicates == 0       # ping's "98 packets transmitted"
    lost = [p.seq for p in rec.probes if p.answered is None]
    assert lost == [22, 51]         # ping: "96 received"
    on_cut, on_restore = cut_and_restore(rec.through_last_answer(), CUT, RESTORE)
    # seq 21 went out after the cut and was answered (OVS had not yet seen the link down);
    # 22 was lost; 23's reply at .422205 ends the outage.
    assert on_cut.lost == 1 and on_cut.back_seq == 23
    assert on_cut.ms == pytest.approx(1000 * (1796468591.422205 - CUT), abs=0.1)
    assert on_restore.lost == 1 and on_restore.back_seq == 52
    assert on_restore.ms == pytest.approx(1000 * (1796468591.715553 - RESTORE), abs=0.1)


def test_send_times_come_from_reply_minus_round_trip_and_lost_ones_are_interpolated():
    rec = parse(stream((1, 100.00, 1.0), (2, 100.01, -1), (3, 100.02, -1), (4, 100.03, 4.0)), 0.01)
    assert [p.seq for p in rec.probes] == [1, 2, 3, 4]
    assert rec.probes[0].sent == pytest.approx(100.00) and rec.probes[3].sent == pytest.approx(100.03)
    assert rec.probes[1].sent == pytest.approx(100.01) and rec.probes[2].sent == pytest.approx(100.02)
    assert rec.probes[3].answered == pytest.approx(100.034)


def test_no_probe_lost_is_no_outage():
    rec = parse(steady(50), 0.01)
    assert outage(rec, 100.2) == outage(rec, 100.2).__class__(0.0, 0, None)


def test_an_outage_runs_from_the_event_to_the_first_reply_after_the_last_loss():
    # cut at 100.105; probes 11-30 lost (sent 100.10-100.29); 31 sent 100.30, answered 100.301
    rec = parse(steady(60, lost=set(range(11, 31))), 0.01)
    o = outage(rec, 100.105)
    assert o.lost == 20 and o.back_seq == 31 and o.ms == pytest.approx(196.0, abs=0.01)


def test_traffic_that_comes_back_and_stops_again_is_one_outage_to_its_end():
    rec = parse(steady(60, lost={11, 12, 20, 21, 22}), 0.01)
    o = outage(rec, 100.101)
    assert o.lost == 5 and o.back_seq == 23


def test_probes_lost_to_the_end_are_no_recovery_not_zero():
    rec = parse(steady(40, lost=set(range(11, 41))), 0.01)
    o = outage(rec, 100.101)
    assert o.seconds is None and o.ms is None and o.lost == 30


def test_probes_in_flight_at_the_stop_are_not_losses_once_traffic_was_back():
    rec = parse(steady(40, lost={11, 12, 40}), 0.01)
    assert outage(rec, 100.101).seconds is None     # 40 lost after the last reply: no end seen
    trimmed = rec.through_last_answer()
    assert trimmed.last_seq == 39
    o = outage(trimmed, 100.101)
    assert o.lost == 2 and o.back_seq == 13


def test_a_probe_sent_just_before_the_cut_and_lost_to_it_counts():
    rec = parse(steady(40, lost={10, 11}), 0.01)      # 10 sent at 100.09, the cut at 100.095
    assert outage(rec, 100.095).lost == 2


def test_cut_and_restore_count_each_lost_probe_once():
    # Never back after the cut (11-30 lost), restore at 100.295, back at 32.
    rec = parse(steady(60, lost=set(range(11, 32))), 0.01)
    on_cut, on_restore = cut_and_restore(rec, 100.095, 100.295)
    assert on_cut.seconds is None and on_cut.lost == 20
    assert on_restore.lost == 1 and on_restore.back_seq == 32
    assert on_restore.ms == pytest.approx(1000 * (100.311 - 100.295), abs=0.01)
    # Back after the cut, then lost again on the restore.
    rec = parse(steady(60, lost={11, 12, 31, 32, 33}), 0.01)
    on_cut, on_restore = cut_and_restore(rec, 100.095, 100.295)
    assert (on_cut.lost, on_cut.back_seq) == (2, 13)
    assert (on_restore.lost, on_restore.back_seq) == (3, 34)


def test_a_cut_that_traffic_came_back_from_with_the_last_probe_before_the_restore_has_an_end():
    """Found by CI (an RSTP failover on namespaces): traffic came back after the cut only with
    the probe sent last before the restore, which is where the two windows meet. That probe
    ends the cut's outage (it was "no recovery", the failover a failure); the restore's
    window starts after it."""
    rec = parse(steady(60, lost=set(range(11, 31))), 0.01)     # 31 sent 100.30, answered 100.301
    on_cut, on_restore = cut_and_restore(rec, 100.095, 100.305)
    assert (on_cut.lost, on_cut.back_seq) == (20, 31)
    assert on_cut.ms == pytest.approx(1000 * (100.301 - 100.095), abs=0.01)
    assert on_restore.seconds == 0.0 and on_restore.lost == 0


def test_duplicate_replies_are_counted_not_taken_as_answers():
    text = steady(5) + "\n[100.0415] 64 bytes from 192.168.10.10: icmp_seq=5 ttl=64 time=1.50 ms (DUP!)"
    assert parse(text, 0.01).duplicates == 1


def test_nothing_to_go_by():
    assert parse("PING 192.168.10.10 (192.168.10.10) 56(84) bytes of data.", 0.01) == Record((), 0)
    assert outage(Record((), 0), 100.0).seconds == 0.0


def test_a_cut_traffic_never_came_back_from_has_no_end_though_a_probe_in_flight_was_answered():
    """The probe sent just after the cut crossed before the link went down (answered); every
    later one was lost until the restore at 100.395, and the next is answered: the cut has no
    end, its losses are its own, and the restore's outage starts at the restore."""
    rec = parse(steady(80, lost=set(range(13, 41))), 0.01)     # 12 sent 100.11, answered
    on_cut, on_restore = cut_and_restore(rec, 100.105, 100.395, back=False)
    assert on_cut.seconds is None and on_cut.lost == 28
    assert on_restore.seconds == 0.0 and on_restore.lost == 0
    # Told it came back, the same record would split at probe 12: the point of `back`.
    wrong, _ = cut_and_restore(rec, 100.105, 100.395)
    assert wrong.lost == 0
