"""Model -> the files of a lab directory. Rendering is pure; writing happens only when all
files rendered, so bad input or a template error never leaves a half-written lab."""
from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

import jinja2

from .errors import InputError
from .model import Lab
from .resources import resource_dir

LAB_FILE = "lab.json"
MARKER = "labgen-lab"   # lab.json's "kind": how we tell our own lab dirs from anything else


def _ruby_str(value: object) -> str:
    # Single-quoted Ruby strings do no interpolation; only \ and ' need escaping.
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(resource_dir("templates"))),
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
        keep_trailing_newline=True, autoescape=False,
    )
    env.filters["q"] = lambda v: shlex.quote(str(v))
    env.filters["rq"] = _ruby_str
    return env


def lab_json(lab: Lab) -> str:
    return json.dumps({"kind": MARKER, **lab.to_dict()}, indent=2) + "\n"


def render_files(lab: Lab) -> dict[str, str]:
    """Every text file of the lab directory, by relative path. They never depend on where
    the lab directory is (the README's commands run from inside it)."""
    env = environment()
    files = {
        LAB_FILE: lab_json(lab),
        "topology.dot": env.get_template("topology.dot.j2").render(lab=lab),
        "README.md": env.get_template("README.md.j2").render(lab=lab),
    }
    if lab.provider == "libvirt":
        files["Vagrantfile"] = env.get_template("Vagrantfile.j2").render(lab=lab)
    node_tpl = env.get_template("node.sh.j2")
    for node in lab.nodes:
        # VMs keep their hostname across reboots; an emulated node must not touch the host's files.
        files[f"provision/{node.name}.sh"] = node_tpl.render(
            lab=lab, node=node, persist_hostname=lab.provider == "libvirt")
    return files


def is_lab_dir(path: Path) -> bool:
    try:
        return json.loads((path / LAB_FILE).read_text()).get("kind") == MARKER
    except (OSError, ValueError, AttributeError):
        return False


def check_target(target: Path, force: bool) -> None:
    """Refuse to write over something that is not ours (or is, without --force)."""
    if target.exists() and not target.is_dir():
        raise InputError(f"{target} exists and is not a directory: choose another --dir")
    if not target.exists() or force or not any(target.iterdir()):
        return
    if is_lab_dir(target):
        raise InputError(f"{target} already holds a lab: `labgen destroy {target}` it first, "
                         f"or pass --force to overwrite its files")
    raise InputError(f"{target} exists and is not a labgen lab: choose another --dir, "
                     f"or pass --force to write into it")


def write_lab(lab: Lab, target: Path, force: bool = False) -> list[Path]:
    """Render, then write every file; returns the paths written."""
    check_target(target, force)
    files = render_files(lab)
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for rel, text in files.items():
        path = target / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write-then-rename: a reader (or a crash) never sees a partial file.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(tmp, 0o755 if rel.endswith(".sh") else 0o644)
        os.replace(tmp, path)
        written.append(path)
    (target / "logs").mkdir(exist_ok=True)
    svg = draw_svg(target / "topology.dot")
    if svg:
        written.append(svg)
    return written


def draw_svg(dot_file: Path) -> Path | None:
    """topology.svg when Graphviz is installed; the .dot and the README's Mermaid always exist."""
    if shutil.which("dot") is None:
        return None
    svg = dot_file.with_suffix(".svg")
    proc = subprocess.run(["dot", "-Tsvg", "-o", str(svg), str(dot_file)],
                          capture_output=True, text=True)
    return svg if proc.returncode == 0 else None


def load_lab(directory: Path) -> Lab:
    """The resolved model of an existing lab dir (the single source for later commands)."""
    if not is_lab_dir(directory):
        raise InputError(f"{directory} is not a labgen lab (no {LAB_FILE}): pass the lab's "
                         f"directory, e.g. labgen verify lab-gre")
    return Lab.from_dict(json.loads((directory / LAB_FILE).read_text()))
