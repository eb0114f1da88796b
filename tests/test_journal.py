"""npo.journal: a run's cases on disk as they are measured, for --resume."""

import math

import pytest

from npo import journal
from npo.journal import Journal, JournalError

HEADER = {"run": "20261208T000000Z_1-abc", "suite": "quick", "filter": "", "commit": "c",
          "machine": "m", "cases": ["n32-constant-cg", "n32-constant-jacobi"]}


def test_records_survive_a_reopen_exactly(tmp_path):
    j = Journal.create(tmp_path, HEADER)
    rec = {"case": "n32-constant-cg", "iterations": 116, "relerr": math.nan, "ok": True,
           "solve_s": 0.0016583}
    j.append(rec)
    j.close()
    back = Journal.read(j.path)
    assert back.header["suite"] == "quick" and back.run_id == HEADER["run"]
    got = back.records[0]
    assert got["iterations"] == 116 and got["solve_s"] == 0.0016583 and math.isnan(got["relerr"])
    with pytest.raises(FileExistsError):  # a run id is never reused
        Journal.create(tmp_path, HEADER)


def test_a_torn_last_line_is_dropped_and_cut_before_the_next_append(tmp_path):
    j = Journal.create(tmp_path, HEADER)
    j.append({"case": "n32-constant-cg", "iterations": 116})
    j.close()
    with open(j.path, "ab") as f:
        f.write(b'{"case": "n32-constant-jac')  # killed mid-write
    back = Journal.read(j.path)
    assert [r["case"] for r in back.records] == ["n32-constant-cg"]
    back.append({"case": "n32-constant-jacobi", "iterations": 116})
    back.close()
    assert [r["case"] for r in Journal.read(j.path).records] == [
        "n32-constant-cg", "n32-constant-jacobi"]


def test_foreign_or_corrupt_files_are_refused(tmp_path):
    d = tmp_path / journal.JOURNAL_DIR
    d.mkdir()
    (d / "x.jsonl").write_text('{"not": "a journal"}\n')
    with pytest.raises(JournalError, match="no npo-bench journal header"):
        Journal.read(d / "x.jsonl")
    j = Journal.create(tmp_path, HEADER)
    j.close()
    with open(j.path, "a") as f:
        f.write("garbage\n{}\n")
    with pytest.raises(JournalError, match="line 2 is not JSON"):
        Journal.read(j.path)


def test_find_takes_the_newest_or_the_named_run(tmp_path):
    with pytest.raises(JournalError, match="no unfinished run"):
        journal.find(tmp_path)
    a = Journal.create(tmp_path, {**HEADER, "run": "20261208T000000Z_1-aaa"})
    b = Journal.create(tmp_path, {**HEADER, "run": "20261208T000100Z_2-bbb"})
    assert journal.find(tmp_path) == b.path
    assert journal.find(tmp_path, "20261208T000000Z_1-aaa") == a.path
    with pytest.raises(JournalError, match="no unfinished run 'nope'"):
        journal.find(tmp_path, "nope")
    b.remove()
    assert journal.find(tmp_path) == a.path


def test_mismatch_says_what_differs(tmp_path):
    j = Journal.create(tmp_path, HEADER)
    assert j.mismatch({"suite": "quick", "machine": "m"}) is None
    assert j.mismatch({"suite": "standard"}) == "its suite is 'quick', this command's is 'standard'"
    why = j.mismatch({"cases": ["n32-constant-cg", "n64-constant-cg"]})
    assert "adds ['n64-constant-cg']" in why and "lacks ['n32-constant-jacobi']" in why
