"""Model -> the files of a lab directory. Rendering is pure; writing happens only when all
files rendered, so bad input or a template error never leaves a half-written lab."""
from __future__ import annotations

import errno
import os
import shlex
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from labgen.errors import HostError, InputError
from labgen.lab.labfile import LAB_FILE, is_lab_dir, lab_json
from labgen.lab.model import Lab
from labgen.render.svg import finish_svg, start_svg
from labgen.resources import resource_dir

if TYPE_CHECKING:
    import jinja2

def _ruby_str(value: object) -> str:
    # Single-quoted Ruby strings do no interpolation; only \ and ' need escaping.
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def _bytecode_cache() -> jinja2.BytecodeCache | None:
    """Compiling the templates costs more than everything else `labgen render` does (0.2 s
    of 0.4 s); Jinja keeps the compiled code per template source checksum, so a changed
    template is compiled again. No cache where the directory cannot be made (read-only home)."""
    import jinja2
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    where = base / "labgen" / "templates"
    try:
        where.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return jinja2.FileSystemBytecodeCache(str(where))


def environment(provider: str | None = None, templates: Path | None = None) -> jinja2.Environment:
    """The templates of labgen, and with `templates` the provider's own folder, whose
    templates are named "<provider>/..." (README.md.j2 imports "<provider>/readme.md.j2")."""
    import jinja2  # only the verbs that render need it (verify and status do not: ~0.03 s)
    loader: jinja2.BaseLoader = jinja2.FileSystemLoader(str(resource_dir("templates")))
    if provider is not None and templates is not None:
        loader = jinja2.ChoiceLoader([jinja2.PrefixLoader(
            {provider: jinja2.FileSystemLoader(str(templates))}), loader])
    env = jinja2.Environment(
        loader=loader,
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
        keep_trailing_newline=True, autoescape=False, bytecode_cache=_bytecode_cache(),
    )
    env.filters["q"] = lambda v: shlex.quote(str(v))
    env.filters["rq"] = _ruby_str
    return env


class Source(Protocol):
    """What a provider hands rendering: its own files and the facts the node script needs."""

    @property
    def owns_system_files(self) -> bool:
        """May the node script change the node's system files (/etc/hostname, /etc/hosts,
        logind's linger)?"""

    @property
    def script_sets_underlay_address(self) -> bool:
        """Does the node script put the underlay address on the NIC (kernel datapath), and
        keep NetworkManager off that NIC? Else the provider's NIC needs neither."""

    @property
    def peer_wait(self) -> float:
        """How long the root node of an RSTP lab waits for the other nodes' underlay
        addresses before it adds its tunnels anyway (Lab.tunnels_last)."""

    @property
    def templates(self) -> Path:
        """Its templates folder (templates/<provider>/ for the shipped ones): readme.md.j2
        and whatever files() renders, named "<provider>/..." in the environment."""

    def files(self, lab: Lab, env: jinja2.Environment) -> dict[str, str]:
        """Extra files of the lab directory, rendered from its templates folder."""


def render_files(lab: Lab, provider: Source) -> dict[str, str]:
    """Every text file of the lab directory, by relative path. They never depend on where
    the lab directory is (the README's commands run from inside it)."""
    env = environment(lab.provider, provider.templates)
    files = {
        LAB_FILE: lab_json(lab),
        "topology.dot": env.get_template("topology.dot.j2").render(lab=lab),
        "README.md": env.get_template("README.md.j2").render(lab=lab),
    }
    files |= provider.files(lab, env)       # e.g. the Vagrantfile, from its templates folder
    node_tpl = env.get_template("node.sh.j2")
    for node in lab.nodes:
        files[f"provision/{node.name}.sh"] = node_tpl.render(
            lab=lab, node=node, owns_system_files=provider.owns_system_files,
            script_sets_underlay_address=provider.script_sets_underlay_address,
            peer_wait=provider.peer_wait)
    return files


def check_target(target: Path, force: bool) -> None:
    """Refuse to write over something that is not ours (or is, without --force)."""
    try:
        if target.exists() and not target.is_dir():
            raise InputError(f"{target} exists and is not a directory: choose another --dir")
        if not target.exists() or force or not any(target.iterdir()):
            return
    except OSError as exc:
        raise fs_error(target, exc) from None
    if is_lab_dir(target):
        raise InputError(f"{target} already holds a lab: `labgen destroy {target}` it first, "
                         f"or pass --force to overwrite its files")
    raise InputError(f"{target} exists and is not a labgen lab: choose another --dir, "
                     f"or pass --force to write into it")


# errno -> what to do about it, in words a user can act on.
_FS_HINTS = {
    errno.ENOSPC: "free some space or choose another --dir",
    errno.EDQUOT: "free some space or choose another --dir",
    errno.EROFS: "choose another --dir on a writable file system",
    errno.EACCES: "choose a directory you may write to",
    errno.EPERM: "choose a directory you may write to",
    errno.ENOENT: "that place cannot hold new directories (like /proc or /sys): choose another --dir",
}


def fs_error(target: Path, exc: OSError, doing: str = "write the lab directory",
             stage: Path | None = None) -> HostError:
    """One line for a file-system failure around the lab directory: what failed, where, why
    and what to do. Paths inside a staging directory are shown as their place in the lab."""
    where = Path(exc.filename) if exc.filename else target
    if stage is not None and where.is_relative_to(stage):
        where = target / where.relative_to(stage)
    elif where.name.startswith(".") and ".labgen-" in where.name:
        where = target      # the staging directory that could not be made
    if exc.errno == errno.ENOTDIR:
        # Name the file that is in the way, not the path that could not be made.
        where = next((p for p in reversed([where, *where.parents])
                      if p.exists() and not p.is_dir()), where)
        return HostError(f"cannot {doing} {target}: {where} is a file, not a directory: "
                         f"choose another --dir or move the file")
    why = (exc.strerror or str(exc)).lower()
    # Where inside the lab it happened means nothing to the user; a place outside it does.
    at = "" if where.absolute().is_relative_to(target.absolute()) else f" (at {where})"
    return HostError(f"cannot {doing} {target}: {why}{at}: "
                     f"{_FS_HINTS.get(exc.errno or 0, 'choose another --dir')}")


def _missing_parents(target: Path) -> list[Path]:
    """The ancestors of target that do not exist yet, outermost first."""
    missing = []
    for parent in target.absolute().parents:
        if parent.exists():
            break
        missing.append(parent)
    return missing[::-1]


def _write_tree(root: Path, files: dict[str, str]) -> list[str]:
    """Write every file below root (which exists); returns the relative paths."""
    written = []
    svg = start_svg(root / "topology.svg", files.get("topology.dot"))
    try:
        for rel, text in files.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "w") as fh:
                fh.write(text)
            os.chmod(path, 0o755 if rel.endswith(".sh") else 0o644)
            written.append(rel)
        (root / "logs").mkdir(exist_ok=True)
    except BaseException:
        if svg is not None:     # nothing of a failed write may appear later
            svg.kill()
            svg.wait()
        raise
    if svg is not None and finish_svg(svg, root / "topology.svg"):
        written.append("topology.svg")
    return written


def write_lab(lab: Lab, target: Path, provider: Source, force: bool = False) -> list[Path]:
    """Render, then write every file; returns the paths written.

    All or nothing: the files are rendered first, then written into a staging directory on
    the same file system (beside a new lab dir, inside an existing one) and moved into
    place by rename, so a full disk, a read-only mount or a file in the way leaves the target
    as it was (and removes any parent directory this call created). Any file-system failure
    becomes one HostError line."""
    check_target(target, force)
    files = render_files(lab, provider)
    created: list[Path] = []
    stage: Path | None = None
    try:
        if not target.exists():
            for parent in _missing_parents(target):
                parent.mkdir()
                created.append(parent)
            stage = Path(tempfile.mkdtemp(dir=target.absolute().parent, prefix=f".{target.name}.labgen-"))
            rels = _write_tree(stage, files)
            os.chmod(stage, 0o755)
            os.rename(stage, target)
            stage = None
        else:
            stage = Path(tempfile.mkdtemp(dir=target, prefix=".labgen-staging-"))
            rels = _write_tree(stage, files)
            # lab.json last: until it is in place, the directory is not taken for a lab.
            for rel in sorted(rels, key=lambda r: r == LAB_FILE):
                (target / rel).parent.mkdir(parents=True, exist_ok=True)
                os.replace(stage / rel, target / rel)
            (target / "logs").mkdir(exist_ok=True)
            shutil.rmtree(stage)
            stage = None
    except OSError as exc:
        if stage is not None:
            shutil.rmtree(stage, ignore_errors=True)
        for parent in reversed(created):
            try:
                parent.rmdir()
            except OSError:
                pass
        raise fs_error(target, exc, stage=stage) from None
    return [target / rel for rel in rels]
