"""The article's bridge loop as the failover tests see it, on either provider: its links, the
802.1D forward delay the lab's tuned timers give, and which loop veth ends a node's
`ip -o link` shows not up."""
from __future__ import annotations

LOOP = ("b12", "b13", "b23")

# 802.1D moves a blocked port to forwarding through listening and learning, forward delay
# each (4 s with the lab's tuned timers, Lab.stp_config): traffic that needs it stops for at
# least that, however fast the machine. (OVS times these in whole seconds, so a little less
# than 8 s is seen.)
FORWARD_DELAY_MS = 4000


def loop_ends_down(ip_link: str) -> list[str]:
    """The loop veth ends that `ip -o link` (its output) shows not up, admin and carrier."""
    lines = ip_link.splitlines()
    down = []
    for end in (f"{p}.{i}" for p in LOOP for i in (1, 2)):
        line = next((ln for ln in lines if f" {end}@" in ln), "")
        if "LOWER_UP" not in line or not ("<UP" in line or ",UP" in line):
            down.append(end)
    return down
