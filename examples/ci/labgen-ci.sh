#!/usr/bin/env bash
# labgen in CI: set this machine up, enable KVM where the machine has it, then build, verify
# and tear down the article's GRE and VXLAN labs on VMs, one JUnit report per lab.
# The one script behind examples/ci/github-actions.yml and examples/ci/gitlab-ci.yml, and
# what labgen's own CI runs (with --box labgen/debian12).
#
#   examples/ci/labgen-ci.sh [--box NAME] [--out DIR] [--tunnels "gre vxlan"]
#                            [--name-prefix P] [--no-setup] [--keep] [-- MORE labgen create OPTIONS]
#
#   --box NAME       box of every lab (default $LABGEN_BOX, else centos/stream9; a box with a
#                    URL is downloaded once by create, labgen/* boxes are built here)
#   --out DIR        JUnit files, create logs and a failed lab's diagnostics (default
#                    $LABGEN_CI_OUT, else ./labgen-reports)
#   --tunnels LIST   which labs (default $LABGEN_TUNNELS, else "gre vxlan")
#   --name-prefix P  lab names P-gre, P-vxlan (default $LABGEN_CI_NAME_PREFIX, else ci)
#   --no-setup       skip scripts/setup --vm (the machine is set up already; or
#                    LABGEN_CI_SETUP=0)
#   --keep           leave the labs running for later steps of the pipeline, in DIR/.labs/lab-T
#                    (printed at the end); tear each down with `labgen destroy DIR/.labs/lab-T`
#                    (or LABGEN_CI_KEEP=1)
#
# Runs as root, or as a user with passwordless sudo (hosted CI runners). VAGRANT_HOME, when
# set, is kept (CI caches the downloaded box there). Exit 0 when every lab verified, else the
# exit code of the first `labgen create` that did not (see README: Exit codes).
set -euo pipefail
umask 022

here=$(cd "$(dirname "$0")" && pwd -P)
repo=$(cd "$here/../.." && pwd -P)
box="${LABGEN_BOX:-centos/stream9}"
out="${LABGEN_CI_OUT:-$PWD/labgen-reports}"
tunnels="${LABGEN_TUNNELS:-gre vxlan}"
prefix="${LABGEN_CI_NAME_PREFIX:-ci}"
setup="${LABGEN_CI_SETUP:-1}"
keep="${LABGEN_CI_KEEP:-0}"
while [ $# -gt 0 ]; do
  case "$1" in
    --box) box="${2:?--box needs a name}"; shift 2 ;;
    --out) out="${2:?--out needs a directory}"; shift 2 ;;
    --tunnels) tunnels="${2:?--tunnels needs a list}"; shift 2 ;;
    --name-prefix) prefix="${2:?--name-prefix needs a value}"; shift 2 ;;
    --no-setup) setup=0; shift ;;
    --keep) keep=1; shift ;;
    --) shift; break ;;
    -h|--help) awk 'NR > 1 && /^#/ { print substr($0, 3); next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "labgen-ci: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac
mkdir -p "$out"
work="$out/.labs"                           # the lab dirs; removed at the end

say() { printf 'labgen-ci: %s\n' "$*"; }

# Everything that installs or runs labs needs root; keep VAGRANT_HOME across sudo.
if [ "$(id -u)" -eq 0 ]; then
  as_root() { "$@"; }
elif sudo -n true 2>/dev/null; then
  as_root() { sudo -n env ${VAGRANT_HOME:+"VAGRANT_HOME=$VAGRANT_HOME"} "$@"; }
else
  echo "labgen-ci: needs root or passwordless sudo (it installs packages and runs VMs)" >&2
  exit 2
fi

# KVM where the machine has it: GitHub's documented udev rule opens /dev/kvm to the job's
# users (libvirt's qemu among them); without udev, the device node itself. Without
# /dev/kvm labgen uses software emulation (--libvirt-driver auto), which is slower.
enable_kvm() {
  [ -e /dev/kvm ] || { say "no /dev/kvm here: VMs use software emulation"; return 0; }
  if [ -d /etc/udev/rules.d ] && command -v udevadm >/dev/null; then
    echo 'KERNEL=="kvm", GROUP="kvm", MODE="0666", OPTIONS+="static_node=kvm"' |
      as_root tee /etc/udev/rules.d/99-kvm4all.rules >/dev/null
    as_root udevadm control --reload-rules 2>/dev/null || true
    as_root udevadm trigger --name-match=kvm 2>/dev/null || true
  fi
  if [ ! -w /dev/kvm ] || [ ! -r /dev/kvm ]; then
    as_root chmod 0666 /dev/kvm || true
  fi
  say "KVM: $(ls -l /dev/kvm)"
}

# A JUnit file for a lab whose create ended before verifying (nothing else would report it).
junit_error() {  # tunnel code logfile
  local msg
  msg=$(grep -E '^error: ' "$3" | tail -n 1 || true)
  msg=${msg:-labgen create $1 exited with $2 before verifying}
  msg=$(printf '%s' "$msg" | sed -e 's/&/\&amp;/g' -e 's/</\&lt;/g' -e 's/>/\&gt;/g' -e 's/"/\&quot;/g')
  cat > "$out/labgen-$1.xml" <<XML
<?xml version="1.0" encoding="utf-8"?>
<testsuites>
  <testsuite name="labgen.$prefix-$1" tests="1" failures="0" errors="1" skipped="0">
    <testcase classname="labgen.$prefix-$1.create" name="labgen create $1 --box $box">
      <error message="$msg">exit $2; full log: create-$1.log</error>
    </testcase>
  </testsuite>
</testsuites>
XML
}

started=$SECONDS
if [ "$setup" = 1 ]; then
  say "setting up this machine: scripts/setup --vm"
  as_root "$repo/scripts/setup" --vm
fi
labgen=/usr/local/bin/labgen                # where scripts/setup links it
[ -x "$labgen" ] || labgen=$(command -v labgen)
enable_kvm
case "$box" in
  labgen/*)                                 # built locally, never downloaded
    say "building box $box (reused when cached)"
    as_root "$labgen" box build "${box#labgen/}" ;;
esac
say "doctor"
as_root "$labgen" doctor --provider libvirt --box "$box"

first_failure=0
summary=()
teardown=(--destroy)
if [ "$keep" = 1 ]; then teardown=(); fi
for tunnel in $tunnels; do
  t0=$SECONDS
  say "labgen create $tunnel --box $box"
  set +e
  as_root "$labgen" create "$tunnel" --box "$box" --name "$prefix-$tunnel" --dir "$work/lab-$tunnel" \
    --force --junit "$out/labgen-$tunnel.xml" "${teardown[@]}" "$@" 2>&1 | tee "$out/create-$tunnel.log"
  code=${PIPESTATUS[0]}
  set -e
  if [ "$code" -ne 0 ]; then
    [ -s "$out/labgen-$tunnel.xml" ] || junit_error "$tunnel" "$code" "$out/create-$tunnel.log"
    # What a failed lab leaves for the report: per-node diagnostics, Vagrant and console logs.
    for d in diagnostics logs; do
      if [ -d "$work/lab-$tunnel/$d" ]; then
        mkdir -p "$out/lab-$tunnel"
        as_root cp -r "$work/lab-$tunnel/$d" "$out/lab-$tunnel/"
      fi
    done
    [ "$first_failure" -ne 0 ] || first_failure=$code
  fi
  verdict=$(grep -E '^(NOT )?VERIFIED' "$out/create-$tunnel.log" | tail -n 1 || true)
  summary+=("$tunnel: ${verdict:-exit $code} ($((SECONDS - t0)) s)")
done
if [ "$keep" = 1 ]; then
  for tunnel in $tunnels; do
    if [ -f "$work/lab-$tunnel/lab.json" ]; then
      say "kept: $work/lab-$tunnel (labgen destroy $work/lab-$tunnel)"
    fi
  done
else
  as_root rm -rf "$work"
fi

say "done in $((SECONDS - started)) s; reports in $out"
for line in "${summary[@]}"; do say "$line"; done
if [ -n "${GITHUB_STEP_SUMMARY:-}" ]; then
  { echo "### labgen on $box"; for line in "${summary[@]}"; do echo "- $line"; done; } >> "$GITHUB_STEP_SUMMARY"
fi
exit "$first_failure"
