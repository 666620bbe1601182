"""The README's tables are generated from the results files: the block in benchmarks/README.md is the one
``python -m benchmarks.report`` makes now, and every results file has its section."""

from __future__ import annotations

import json

from benchmarks import report
from benchmarks.harness import records


def test_the_readme_tables_are_generated_from_the_results_files() -> None:
    """Fails when a results file changed without ``python -m benchmarks.report --write-readme``."""
    assert report.main(["--check"]) == 0


def test_every_results_file_has_a_section_or_is_named_in_the_prose() -> None:
    sections = {name for name, _, _ in report.SECTIONS}
    readme = report.README.read_text()
    for path in records.RESULTS.glob("*.jsonl"):
        assert path.stem in sections or f"results/{path.name}" in readme, path.name


def test_write_readme_replaces_only_the_block(tmp_path, capsys) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\nprose\n\n{report.BEGIN}\nstale\n{report.END}\n\nafter\n")
    assert report.main(["--check", "--readme", str(readme)]) == 1
    assert "is not current" in capsys.readouterr().err
    assert report.main(["--write-readme", "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("# Title\n\nprose\n\n") and text.endswith("\n\nafter\n") and "stale" not in text
    assert report.main(["--check", "--readme", str(readme)]) == 0


def test_a_section_shows_the_latest_run_under_its_command(tmp_path) -> None:
    """The README shows the last run a file holds (earlier ones stay in the file), headed by its command."""
    path = tmp_path / "growth.jsonl"
    row = {"size": 8, "batch": 2, "step_s": 0.1, "images_per_s": 20.0, "gflop": 0.1, "gflop_per_s": 1.0, "redone": 0}
    for date, step in (("2026-01-01T00:00:00+00:00", 0.1), ("2026-02-01T00:00:00+00:00", 0.2)):
        records.append(
            path, {"command": "PYTHONPATH=. python benchmarks/growth.py", "date": date, **row, "step_s": step}
        )
    text = report.block(tmp_path)
    assert "`PYTHONPATH=. python benchmarks/growth.py`" in text and "2026-02-01" in text and "2026-01-01" not in text
    assert "| 8 | 2 | 0.200 s |" in text and json.loads(path.read_text().splitlines()[0])["step_s"] == 0.1


def test_a_missing_results_file_leaves_its_section_out(tmp_path) -> None:
    """Only files that exist get a section (a benchmark not yet run, e.g. cascade.jsonl, is simply absent); the flow
    section renders its transcribed records, with the target's verdict."""
    (tmp_path / "flow.jsonl").write_text((records.RESULTS / "flow.jsonl").read_text())
    text = report.block(tmp_path)
    assert "(`flow.py`)" in text and "met (9 of 9 lower)" in text and "source: transcribed from README" in text
    assert "cascade" not in text and text.count("### ") == 1
