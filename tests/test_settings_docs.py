"""Every service setting is documented in docs/service.md's settings table, and the table
names no setting that does not exist."""

from __future__ import annotations

import re
from pathlib import Path

from app.settings import Settings

DOC = Path(__file__).resolve().parents[1] / "docs" / "service.md"


def test_the_settings_table_lists_exactly_the_settings() -> None:
    section = DOC.read_text().split("### Settings (environment variables)", 1)[1]
    table = section.split("\n### ", 1)[0]
    documented = set(re.findall(r"^\| `RAB_([A-Z0-9_]+)` \|", table, re.M))
    fields = {name.upper() for name in Settings.model_fields}
    assert fields - documented == set(), "settings missing from docs/service.md"
    assert documented - fields == set(), "documented settings that do not exist"
