"""bench.throughput's VM steal reading, on /proc/stat fixtures (the bench itself measures; tests do not)."""

from pathlib import Path

import pytest

from bench.throughput import cpu_ticks, stolen

# /proc/stat as Linux 6.18 writes it: user nice system idle iowait irq softirq steal guest guest_nice
BEFORE = """cpu  874198 0 1495625 5427674 24298 0 925756 86910 0 0
cpu0 316956 0 831411 2583975 2461 0 686534 28789 0 0
cpu1 557242 0 664214 2843699 21837 0 239222 58121 0 0
intr 1 2 3
"""
AFTER = """cpu  874298 0 1495725 5427774 24298 0 925856 87010 0 0
cpu0 317006 0 831461 2584025 2461 0 686584 28839 0 0
cpu1 557292 0 664264 2843749 21837 0 239272 58171 0 0
intr 1 2 3
"""


def test_cpu_ticks_reads_the_machine_line(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    stat.write_text(BEFORE)
    assert cpu_ticks(stat) == (86910, 874198 + 1495625 + 5427674 + 24298 + 925756 + 86910)


def test_stolen_is_the_share_of_ticks_over_the_block(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    stat.write_text(BEFORE)
    got: list[float] = []
    with stolen(got, stat):
        stat.write_text(AFTER)  # 500 ticks passed, 100 of them stolen
    assert got == [pytest.approx(0.2)]


def test_a_stat_without_the_machine_line_names_the_file(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    stat.write_text("cpu0 1 2 3 4 5 6 7 8 0 0\n")
    with pytest.raises(ValueError, match=str(stat)):
        cpu_ticks(stat)
