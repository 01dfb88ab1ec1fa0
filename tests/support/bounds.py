"""How long a test waits for each kind of operation before it kills it (with everything it
started: support.cli.run_group). Each bound is the slowest figure recorded for that operation
on a machine of this kind (2 cores, guests under software emulation) with a margin of about
2x, never a guess of "long enough"; a run past it is a hang or a regression, and failing it
then leaves the rest of CI's 90 minutes to the other tests. pytest-timeout backs these up per
test (the TEST_* bounds below, and `timeout` in pyproject.toml for every other test), and
LABGEN_SUITE_BUDGET ends a run that has used up its budget (tests/conftest.py).

Where the figures are recorded: docs/benchmarks.md ("VM labs: one host or two", 2026-11-27:
the slow day, guests booting 3x slower than the day before), shared/notes/vm-lab.md (a
machine whose libvirt re-probed QEMU on every call, 2026-11-26) and the fresh-root test's
figures (docs/benchmarks.md, "Fresh-root test")."""

# ---- VM labs (two emulated guests) ----------------------------------------------------------

# `labgen create` of a two-VM lab, to VERIFIED: on the slow day the last guest answered SSH at
# 173-199 s and the lab was verified at 313-354 s (docs/benchmarks.md, 2026-11-27); on the
# machine whose libvirt re-probed QEMU on every call, up alone took 467 s before verification
# (shared/notes/vm-lab.md) and verify takes 40-60 s more: ~520 s x2.
VM_CREATE = 1000
# `labgen up` of a running lab (Vagrant's check of the running guests, then the node scripts
# again): node scripts ~75-90 s on the slow day, Vagrant's network step ~25 s
# (docs/benchmarks.md, 2026-11-27): ~115 s x2, rounded up.
VM_UP_AGAIN = 300
# `labgen verify` of a VM lab: 39-42 s on the slow day (docs/benchmarks.md, 2026-11-27); one that
# fails waits out spanning tree's settle time too (up to 75 s, Lab.settle_timeout): ~135 s x2.
VM_VERIFY = 300
# `labgen failover` of three loop links of one VM node, 802.1D with tuned timers: on netns the
# same cuts take ~45 s (two forward delays of 4 s per cut and per restore that crosses the
# probes' path, judged after each); over SSH to emulated guests not measured yet: x2 for the
# guests, x3 for the slow day, x2.
VM_FAILOVER = 540
# `labgen destroy` of a VM lab (vagrant destroy, then a virsh sweep of what is left): 8-12 s
# (docs/benchmarks.md, 2026-11-27); each virsh call took up to 20 s on the re-probing machine
# (shared/notes/vm-lab.md), about ten of them: ~200 s x2. (labgen bounds its own `vagrant
# destroy` at 300 s: the test's bound is above it, so labgen's own error is what it reports.)
VM_DESTROY = 400
# A `vagrant` query (box list): Ruby's start and a libvirt call, 3-6 s per call
# (shared/notes/vm-lab.md), 20 s on the re-probing machine: x2, rounded up.
VAGRANT_QUERY = 120
# `labgen box build debian12` from a cold cache: ~4-6 min on a loaded 2-core machine
# (shared/notes/vm-lab.md: a fresh machine 6-7 min with packages and the box build, 4 min with
# a cached box); a warm cache reuses the box in seconds: 6 min x2, and a margin for a slow mirror.
BOX_BUILD = 900
# examples/ci/labgen-ci.sh, for each tunnel kind it is given: one lab created and verified
# (VM_CREATE), then destroyed (VM_DESTROY), the set-up checks and reports in seconds.
CI_RECIPE = VM_CREATE + VM_DESTROY

# ---- fresh Debian roots (tests/e2e/test_fresh_machine.py) -----------------------------------

# debootstrap --variant=minbase from an empty cache: 106 s (Debian 12) / 70 s (Debian 13)
# (docs/benchmarks.md, "Fresh-root test"): x3 for a slow day as the VM figures show it, then x2.
DEBOOTSTRAP = 600
# scripts/setup or scripts/setup --vm in a fresh root from an empty package cache: 107 / 82 s
# for scripts/setup, 64 / 35 s for --vm after it (docs/benchmarks.md): x3 for a slow day, then x2.
FRESH_SETUP = 600

# ---- whole tests (pytest-timeout; fixture set-up and teardown count too) --------------------

# A VM test with a boot inside (its module's shared lab or a lab of its own): the box build if
# it is the first VM test of the run (the session's `box` fixture), the boot, and ten minutes
# of its own steps (a few verifies and ups, a destroy: each well below its bound on any day).
TEST_BOOT = BOX_BUILD + VM_CREATE + 600
# A box test (tests/e2e/test_vm_box_*.py): a box build, then Vagrant adding or fetching it.
TEST_BOX = 2 * BOX_BUILD
# A fresh-root test: debootstrap (once per suite, in its module fixture), two set-ups and the
# short checks between them (300 s bounds each).
TEST_FRESH = DEBOOTSTRAP + 2 * FRESH_SETUP + 5 * 300
