"""The one file lock (labgen/system/locks.py) as the lab verbs use it (lifecycle.locked)."""
from __future__ import annotations

import pytest

from labgen import lifecycle
from labgen.errors import HostError, InputError


def test_a_second_holder_is_refused_at_once_with_what_holds_it(tmp_path):
    with lifecycle.locked(tmp_path):
        with pytest.raises(InputError, match="another labgen command is working on"):
            with lifecycle.locked(tmp_path):
                pass
    with lifecycle.locked(tmp_path):      # released: free again
        pass


def test_a_lab_dir_that_cannot_hold_the_lock_is_one_line(tmp_path):
    with pytest.raises(HostError, match="cannot lock the lab directory"):
        with lifecycle.locked(tmp_path / "gone"):
            pass
