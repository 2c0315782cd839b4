"""The allocator settings: set for this process and its children, never over the user's own."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from playpen_attribution.core import allocator

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc settings: Linux only")

PROBE = (
    "import json, os; from playpen_attribution.core.allocator import tune_allocator; "
    "said = tune_allocator(); print(json.dumps({'said': said, 'env': {k: v for k, v in os.environ.items() "
    "if k.startswith('MALLOC_')}}))"
)


def probe(extra_env: dict[str, str]) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")} | extra_env
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_sets_the_environment_children_read():
    result = probe({})
    assert result["env"] == {
        "MALLOC_MMAP_THRESHOLD_": str(allocator.MMAP_THRESHOLD),
        "MALLOC_TRIM_THRESHOLD_": str(allocator.TRIM_THRESHOLD),
        "MALLOC_TOP_PAD_": str(allocator.TOP_PAD),
    }
    assert "keeps freed memory" in result["said"]


def test_leaves_a_users_own_settings_alone():
    result = probe({"MALLOC_ARENA_MAX": "2"})
    assert result["env"] == {"MALLOC_ARENA_MAX": "2"}
    assert "as the user set it" in result["said"]
