"""topology.svg from the .dot text, drawn by Graphviz when it is installed (best effort: the
picture is for people; the .dot and the README's Mermaid always exist)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


def start_svg(svg: Path, dot: str | None) -> subprocess.Popen[str] | None:
    """Start Graphviz on the .dot text, when it is installed; it draws while the other
    files are written (it takes about as long as the rest of `render`)."""
    if dot is None or shutil.which("dot") is None:
        return None
    try:
        proc = subprocess.Popen(["dot", "-Tsvg", "-o", str(svg)], stdin=subprocess.PIPE,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
    except OSError:
        return None
    try:
        assert proc.stdin is not None
        proc.stdin.write(dot)       # a few KiB even at 8 nodes: fits the pipe, never blocks
        proc.stdin.close()
    except OSError:
        pass                        # dot exited early: its exit status says it failed
    return proc


def finish_svg(proc: subprocess.Popen[str], svg: Path) -> bool:
    """topology.svg when Graphviz drew it; the .dot and the README's Mermaid always exist."""
    if proc.wait() != 0:
        svg.unlink(missing_ok=True)     # e.g. a disk that filled up half way
        return False
    return True
