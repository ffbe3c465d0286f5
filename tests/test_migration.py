"""Stores written by 0.1.0 (tests/fixtures/results-0.1.0) go through the one migration of 0.2,
core.records.upgrade_run_row, in their shards and in their snapshot (core.store._migrate: its rows through the same
function, whether a sync rewrites it or a reader that never writes migrates a private copy): milestones from text to
an integer list, `device` (the hardware's name) split into `device_type` and `device_name`, a KeyboardInterrupt
failure read as interrupted. The store is read independently with DuckDB. Under 2 s in all."""

from __future__ import annotations

import json
import shutil

import duckdb

from resnet_study.core import store
from resnet_study.core.config import default_milestones
from resnet_study.core.records import upgrade_run_row
from tests.helpers import db_rows, store_fingerprint


def old_rows(results) -> list[dict]:
    return [json.loads(p.read_text())["run"] for p in sorted((results / "runs").glob("*/run.json"))]


def test_old_shards_read_as_this_version_writes_them(old_store):
    for raw in old_rows(old_store):
        assert isinstance(raw["milestones"], str) and "device" in raw  # as 0.1.0 wrote them
        run = store.read_shard(store.results_location(old_store), raw["run_id"]).run
        assert run.milestones == [int(m) for m in raw["milestones"].split(",") if m]
        assert run.device_name == raw["device"] and run.device_type == "cpu"
    assert upgrade_run_row({"status": "failed", "error_message": "KeyboardInterrupt: "})["status"] == "interrupted"
    assert upgrade_run_row({"milestones": ""})["milestones"] == []


def test_an_old_snapshot_is_migrated_in_place_and_then_synced(old_store, tmp_path):
    """The 0.1.0 snapshot itself, migrated by create_schema (what sync does first with a copy of it)."""
    copy = tmp_path / "old.duckdb"
    shutil.copyfile(old_store / "results.duckdb", copy)
    con = duckdb.connect(str(copy))
    before = con.execute("SELECT run_id, milestones, device FROM runs ORDER BY run_id").fetchall()
    store.create_schema(con)
    after = con.execute("SELECT run_id, milestones, device_name, device_type FROM runs ORDER BY run_id").fetchall()
    types = dict(con.execute("SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = 'runs'").fetchall())
    con.close()
    assert types["milestones"] == "BIGINT[]" and "device" not in types
    assert [(r, [int(m) for m in ms.split(",") if m], d, "cpu") for r, ms, d in before] == after

    store.sync(store.results_location(old_store))  # the store as a whole: every run, read back independently
    runs = db_rows(old_store, "SELECT epochs, milestones, device_type, device_name FROM runs")
    assert len(runs) == 9 and all(r["milestones"] == default_milestones(r["epochs"]) for r in runs)
    assert {r["device_type"] for r in runs} == {"cpu"} and all(r["device_name"].lower().startswith("cpu") for r in runs)


def test_a_reader_reads_an_old_snapshot_migrated_and_leaves_the_store_as_it_was(old_store):
    """The service never syncs: it reads a 0.1 results.duckdb through a migrated private copy."""
    before = store_fingerprint(old_store)
    reader = store.StoreReader(store.results_location(old_store))
    _, rows = reader.query("SELECT epochs, milestones, device_type, device_name FROM runs")
    reader.close()
    old = {(r["epochs"], r["device"]) for r in old_rows(old_store)}
    assert len(rows) == 9 and {(e, d) for e, _, _, d in rows} == old
    assert all(ms == default_milestones(e) and t == "cpu" for e, ms, t, _ in rows)
    assert store_fingerprint(old_store) == before
