"""How long a test waits for each kind of operation before it kills it (with its whole
process group: support.cli.run_group). Each bound is the slowest figure recorded on a machine
of this kind (docs/benchmarks.md) with a margin of about 2x, never a guess of "long enough".
pytest-timeout (pyproject.toml) backs them up per test, and LABGEN_SUITE_BUDGET ends a run
that has used up its budget (tests/conftest.py)."""

# Two emulated VMs from nothing to VERIFIED: ~100 s on a fast hour; on the slowest machine
# recorded (libvirt re-probing QEMU on every call) up took 467 s before verification.
VM_CREATE = 1000
# labgen up on running VMs (the node scripts again): 21-50 s; slow day x3.
VM_UP_AGAIN = 300
# verify of a VM lab: ~10-20 s; one that fails waits out spanning tree's poll too.
VM_VERIFY = 300
# vagrant destroy of two VMs plus the leftover sweep: ~6-10 s; libvirt's re-probing adds
# seconds to every virsh call.
VM_DESTROY = 300
# labgen box build debian12 from a cold cache: 323 s on a loaded 2-core machine (2026-12-05).
BOX_BUILD = 900
# The CI recipe script: one VM lab created, verified, torn down (VM_CREATE) plus set-up checks.
CI_RECIPE = VM_CREATE + 200
# scripts/setup in a fresh root: ~94 s of packages for --vm on a fast hour; a cold cache
# downloads every .deb (the whole CI run, this included, took 18-20 min).
FRESH_SETUP = 1200
