"""The one rebuild sequence: claim, build, switch, grace, drop — and what it never drops."""

from __future__ import annotations

from pathlib import Path

import pytest

from projections.generations import Generation, SwitchConflict
from projections.generations_sqlite import SQLiteGenerationStore
from projections.rebuild_sequence import BuiltCopy, rebuild_generation

PROJECTION, DEFAULT_VIEW = "things", "Things"


class AnswerLostOnSwitch(SQLiteGenerationStore):
    """A pointer store whose switch commits but whose answer is lost, so the retry conflicts."""

    def switch(self, projection: str, *, expected: Generation, new: Generation) -> Generation:
        super().switch(projection, expected=expected, new=new)
        raise SwitchConflict("the retried UPDATE matched no row: the first one had committed")


class SwitchedByAnother(SQLiteGenerationStore):
    """A pointer store on which someone else switched first."""

    def switch(self, projection: str, *, expected: Generation, new: Generation) -> Generation:
        raise SwitchConflict("generation 1 is no longer live")


def test_a_rebuild_builds_the_next_generation_switches_and_drops_the_old_copy(
    tmp_path: Path,
) -> None:
    pointers = SQLiteGenerationStore(tmp_path / "projections.sqlite3")
    dropped: list[str] = []
    report = rebuild_generation(
        pointers,
        PROJECTION,
        DEFAULT_VIEW,
        build=lambda target: BuiltCopy(events=3, position=3, rows=2),
        drop=dropped.append,
        grace=0,
    )
    assert (report.previous.view_name, report.live.view_name) == ("Things", "Things_g2")
    assert dropped == ["Things_g2", "Things"]  # leftovers of a dead rebuild, then the old copy
    assert pointers.live(PROJECTION, DEFAULT_VIEW).view_name == "Things_g2"


def test_a_switch_whose_answer_was_lost_keeps_the_new_copy_it_made_live(tmp_path: Path) -> None:
    pointers = AnswerLostOnSwitch(tmp_path / "projections.sqlite3")
    dropped: list[str] = []
    report = rebuild_generation(
        pointers,
        PROJECTION,
        DEFAULT_VIEW,
        build=lambda target: BuiltCopy(events=1, position=1, rows=1),
        drop=dropped.append,
        grace=0,
    )
    assert report.live.view_name == "Things_g2"
    assert "Things_g2" not in dropped[1:]  # only the pre-build cleanup, never the live copy
    assert pointers.live(PROJECTION, DEFAULT_VIEW).view_name == "Things_g2"


def test_a_rebuild_that_lost_the_switch_drops_its_copy_and_keeps_the_live_one(
    tmp_path: Path,
) -> None:
    pointers = SwitchedByAnother(tmp_path / "projections.sqlite3")
    dropped: list[str] = []
    with pytest.raises(SwitchConflict):
        rebuild_generation(
            pointers,
            PROJECTION,
            DEFAULT_VIEW,
            build=lambda target: BuiltCopy(events=1, position=1, rows=1),
            drop=dropped.append,
            grace=0,
        )
    assert dropped == ["Things_g2", "Things_g2"]
    record = pointers.record(PROJECTION, DEFAULT_VIEW)
    assert (record.live.view_name, record.building) == ("Things", None)
