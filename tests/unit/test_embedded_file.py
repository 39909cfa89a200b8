"""The embedded store's file is made by the first write, never by a read: a command that
only reads, or fails before writing, leaves nothing behind; a file another process makes
meanwhile is read."""

from __future__ import annotations

from pathlib import Path

from mlcycle.store.embedded import EmbeddedStore


def test_reads_make_no_file_and_the_first_write_does(tmp_path: Path) -> None:
    path = tmp_path / "data" / "store.sqlite3"
    store = EmbeddedStore(path)
    assert store.count("loan") == 0 and store.find("loan") == []
    assert store.read_snapshot("loan").empty and store.fetch_hashes("loan", ["a"]) == {}
    assert list(store.scan("loan_predictions", chunk=10)) == []
    store.append("loan_quarantine", [])  # nothing to write: still nothing made
    assert not path.exists() and not path.parent.exists()
    store.write_rows("loan", [{"_id": "a", "_hash": "h", "x": 1}], [])
    assert path.exists() and store.count("loan") == 1
    store.close()
    assert EmbeddedStore(path).find("loan")[0]["x"] == 1


def test_a_file_made_by_another_process_after_a_read_is_read(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    reader = EmbeddedStore(path)
    assert reader.count("loan") == 0 and not path.exists()
    writer = EmbeddedStore(path)
    writer.write_rows("loan", [{"_id": "a", "_hash": "h", "x": 1}], [])
    assert reader.count("loan") == 1
    reader.append("loan_log", [{"_id": "e1"}])
    assert writer.count("loan_log") == 1
