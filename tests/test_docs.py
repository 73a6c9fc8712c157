"""The docs that the code can generate match the code (benchmark/tools/docgen.py)."""

from __future__ import annotations

from benchmark.config import NON_SEMANTIC
from benchmark.core.sweeps import SWEEPS
from benchmark.tools import docgen


def test_generated_blocks_are_up_to_date():
    assert docgen.stale() == [], "run python -m benchmark.tools.docgen and commit the docs"
    assert docgen.main(["--check"]) == 0


def test_every_sweep_and_identity_key_is_in_the_slurm_readme():
    text = (docgen.ROOT / "slurm/README.md").read_text()
    for name, sweep in SWEEPS.items():
        assert f"* `{name}` ({len(sweep)} runs)" in text
    for key in NON_SEMANTIC:
        assert f"`{'.'.join(key)}`" in text


def test_a_stale_block_is_found_and_rebuilt(tmp_path):
    doc = tmp_path / "slurm" / "README.md"
    doc.parent.mkdir()
    doc.write_text("intro\n<!-- generated:sweeps -->\n* `gone` (1 runs): removed\n<!-- /generated:sweeps -->\nend\n")
    assert docgen.stale(tmp_path) == ["slurm/README.md"]
    rebuilt = docgen.render(doc.read_text(), "x")
    assert "`gone`" not in rebuilt and "* `smoke`" in rebuilt
    assert rebuilt.startswith("intro\n") and rebuilt.endswith("end\n")
    doc.write_text(rebuilt)
    assert docgen.stale(tmp_path) == []
