"""Fixtures the end-to-end modules share."""
from __future__ import annotations

import pytest
from support.netns import host_state


@pytest.fixture
def clean_host():
    """The host as it was before the test, compared after it: nothing may be left behind."""
    before = host_state()
    yield before
    after = host_state()
    assert after == before, f"the lab left something behind: before={before} after={after}"
