"""`make bench` replaces the sections of the benchmarks it reran and keeps every other one."""
from __future__ import annotations

import pytest

from benchmarks.run import replace_sections

RESULTS = """# Benchmark results

Intro.

## Serving (issue 2)

old serving

## Sound (issue 24)

kept as measured
"""


def test_a_rerun_section_replaces_its_own_and_keeps_the_others():
    out = replace_sections(RESULTS, ["## Serving (issue 2)\n\nnew serving\n"])
    assert "new serving" in out and "old serving" not in out
    assert out.index("## Serving") < out.index("## Sound") and "kept as measured" in out
    assert out.startswith("# Benchmark results\n\nIntro.\n")


def test_the_last_section_and_a_new_one():
    out = replace_sections(RESULTS, ["## Sound (issue 24)\n\nremeasured", "## New\n\nfirst"])
    assert "kept as measured" not in out and out.endswith("remeasured\n\n## New\n\nfirst\n")
    assert out.count("## ") == 3


def test_a_section_without_its_heading_is_refused():
    with pytest.raises(ValueError, match="heading"):
        replace_sections(RESULTS, ["no heading"])
