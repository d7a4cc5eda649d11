"""The model registry: every trained model registered in SQLite, gates decide promotion, and the
runtime loads exactly what the ``promoted/<symbol>/<timeframe>/<target>`` link points to.

Layout under the root (``<output_dir>/registry``)::

    registry.db                         SQLite (WAL); every write is one BEGIN IMMEDIATE transaction
    models/<model_id>/v<version>/       a copy of the run's model dir, moved into place atomically
    promoted/<symbol>/<timeframe>/<target> -> ../../../models/<model_id>/v<version>   (relative symlink)
    families/<symbol>/<timeframe>/<target>/<family> -> ../../../../models/...   each family's served model
    registry.json                       human-readable export of all rows, rewritten after every write

Every write, and every read through a link (``promoted_path``, ``resolve_link``), first reconciles the links of
all slots with the database and removes what a killed writer left (staging folders, temp files).

A slot has one promoted model (its link, what a single-model runtime serves) and, per family, one member:
the family's served model in an ensemble across families (``runtime.families``). Promoting a model makes it
its family's member too; ``promote --member`` adds a family's model beside the slot's promoted one.

CLI: ``python -m trainer.registry [--root DIR] list|show|compare|promote|rollback|prune|export``.
"""

import argparse
import fcntl
import hashlib
import json
import logging
import math
import os
import shutil
import sqlite3
import sys
import tempfile
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

from core.errors import UserError

log = logging.getLogger("candlelab")

DB_NAME = "registry.db"
MODEL_CARD = "model_card.json"  # trainer.model_dir.CARD: names the run that made the model
STAGING_PREFIX = ".incoming-"
EXPORT_NAME = "registry.json"
BUSY_TIMEOUT_S = 60.0
STAGES = ("candidate", "promoted", "archived")
RECORD_KEYS = (
    "family",
    "symbol",
    "timeframe",
    "target",
    "headline",
    "headline_value",
    "metrics",
    "gates",
    "run_id",
    "run_dir",
    "git_commit",
    "config_hash",
    "data_fingerprint",
)
# optional record key "economics": {"trading": backtest metrics, "policy": the decision policy,
# "economic": the economic checks (passed, n_trials, dsr, ...), "verdict": predictive/tradeable}
ECONOMICS_KEYS = ("trading", "policy", "economic", "verdict")
EXIT_USER_ERROR = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS models (
    model_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    slot TEXT NOT NULL,
    family TEXT NOT NULL,
    symbol TEXT NOT NULL,
    timeframe TEXT NOT NULL,
    target TEXT NOT NULL,
    stage TEXT NOT NULL CHECK (stage IN ('candidate', 'promoted', 'archived')),
    registered_at TEXT NOT NULL,
    promoted_at TEXT,
    headline TEXT,
    headline_value REAL,
    metrics_json TEXT NOT NULL,
    gates_json TEXT NOT NULL,
    run_id TEXT,
    run_dir TEXT,
    git_commit TEXT,
    config_hash TEXT,
    data_fingerprint TEXT,
    model_dir TEXT NOT NULL,
    economics_json TEXT NOT NULL DEFAULT '{}',
    data_sources_json TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (model_id, version)
);
CREATE INDEX IF NOT EXISTS models_slot_stage ON models (slot, stage);
CREATE TABLE IF NOT EXISTS promotions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    slot TEXT NOT NULL,
    model_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    action TEXT NOT NULL CHECK (action IN ('promote', 'rollback')),
    at TEXT NOT NULL,
    previous_model_id TEXT,
    previous_version INTEGER
);
-- per slot, each family's served model in an ensemble (the promoted model is its family's member)
CREATE TABLE IF NOT EXISTS family_members (
    slot TEXT NOT NULL,
    family TEXT NOT NULL,
    model_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    at TEXT NOT NULL,
    PRIMARY KEY (slot, family)
);
-- versions are never reused, even after their rows are pruned: model_id:version names one model forever
CREATE TABLE IF NOT EXISTS version_counters (
    model_id TEXT PRIMARY KEY,
    last_version INTEGER NOT NULL
);
"""


class _Txn:
    """An open write transaction plus the filesystem steps to undo if it rolls back / to run after commit."""

    def __init__(self, con: sqlite3.Connection):
        self.con = con
        self.undo: list[Callable[[], None]] = []
        self.after_commit: list[Callable[[], None]] = []


class Registry:
    """An embedded, multi-process-safe model registry rooted at one directory."""

    def __init__(self, root: Path | str):
        self.root = Path(root).expanduser().resolve()
        self.db_path = self.root / DB_NAME
        self.models_dir = self.root / "models"
        self.promoted_dir = self.root / "promoted"
        self.families_dir = self.root / "families"
        for d in (self.root, self.models_dir, self.promoted_dir, self.families_dir):
            d.mkdir(parents=True, exist_ok=True)
        with _database_errors(self.db_path):
            con = self._connect()
            try:
                if con.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                    con.execute("PRAGMA journal_mode=WAL")  # persistent in the file: set once
                con.execute("BEGIN IMMEDIATE")
                for statement in filter(str.strip, _SCHEMA.split(";")):
                    con.execute(statement)
                _add_economics_column(con)
                _add_data_sources_column(con)
                con.execute("COMMIT")
            finally:
                con.close()

    def register(
        self, record: dict, model_dir: Path, auto_promote: bool = True, keep_candidates: int | None = 20
    ) -> dict:
        """Copy ``model_dir`` into the store as the next version of its model id and add its row.

        With ``auto_promote`` the new row is promoted iff its gates passed and the slot has no promoted model
        or the new headline value is >= the promoted one's (same headline metric). Returns the row with
        ``promoted`` saying whether this call promoted it."""
        rec = _checked_record(record)
        if keep_candidates is not None and keep_candidates < 1:
            raise UserError(f"keep_candidates must be >= 1 or None, got {keep_candidates}", "register")
        source = Path(model_dir)
        if not source.is_dir():
            raise UserError("model directory not found", str(source))
        model_id = model_id_for(rec)
        id_dir = self.models_dir / model_id
        id_dir.mkdir(parents=True, exist_ok=True)
        # copy outside the lock (the slow part), into a hidden temp dir that no reader ever lists; it stays
        # locked while this process lives, so the next write removes it only if this process was killed
        staging, staging_lock = _claim_staging(self.models_dir)
        try:
            shutil.copytree(source, staging, dirs_exist_ok=True)
            _check_made_by(staging, rec["run_id"], source)
            with self._write() as tx:
                version = _next_version(tx.con, model_id)
                dest = id_dir / f"v{version}"
                while dest.exists() or dest.is_symlink():
                    # left by a registration that died before commit: a link may still point at it, so the
                    # folder is never reused or replaced; this model takes the next free version
                    version = _next_version(tx.con, model_id)
                    dest = id_dir / f"v{version}"
                os.replace(staging, dest)
                tx.undo.append(lambda: os.replace(dest, staging))
                now = _utc_now()
                tx.con.execute(
                    "INSERT INTO models (model_id, version, slot, family, symbol, timeframe, target, stage,"
                    " registered_at, promoted_at, headline, headline_value, metrics_json, gates_json, run_id,"
                    " run_dir, git_commit, config_hash, data_fingerprint, model_dir, economics_json,"
                    " data_sources_json)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, 'candidate', ?, NULL, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        model_id,
                        version,
                        rec["slot"],
                        rec["family"],
                        rec["symbol"],
                        rec["timeframe"],
                        rec["target"],
                        now,
                        rec["headline"],
                        rec["headline_value"],
                        _dumps(rec["metrics"]),
                        _dumps(rec["gates"]),
                        rec["run_id"],
                        rec["run_dir"],
                        rec["git_commit"],
                        rec["config_hash"],
                        rec["data_fingerprint"],
                        f"models/{model_id}/v{version}",
                        _dumps(rec["economics"]),
                        _dumps(rec["data_sources"]),
                    ),
                )
                row = self._get_in(tx.con, model_id, version)
                promoted = auto_promote and _beats(row, self._promoted_in(tx.con, row["slot"]))
                if promoted:
                    self._promote_in(tx, row, action="promote")
                if keep_candidates is not None:
                    self._prune_in(tx, keep_candidates)
                row = self._get_in(tx.con, model_id, version)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            os.close(staging_lock)
        self.export_json()
        if promoted:
            log.info("registry: %s:%d promoted to %s", model_id, version, row["slot"])
        return {**row, "promoted": promoted}

    def promote(self, model_id: str, version: int | None = None, force: bool = False) -> dict:
        """Make one row the promoted model of its slot (the previous one is archived) and re-point the link.

        Refuses a model whose gates did not pass unless ``force``. Returns the row with ``promoted`` (False when
        it already was) and ``previous`` (``"id:version"`` of the model it replaced, or None)."""
        with self._write() as tx:
            row = _passed_or_forced(self._get_in(tx.con, model_id, version), force, "promote it")
            current = self._promoted_in(tx.con, row["slot"])
            if current is not None and _key(current) == _key(row):
                self._point_link(tx, row)  # heal a link a crashed writer may have left elsewhere
                changed, previous = False, None
            else:
                self._promote_in(tx, row, action="promote")
                changed, previous = True, (_ref(current) if current else None)
            row = self._get_in(tx.con, row["model_id"], row["version"])
        self.export_json()
        return {**row, "promoted": changed, "previous": previous}

    def promote_member(self, model_id: str, version: int | None = None, force: bool = False) -> dict:
        """Make one row its family's member of its slot (served by an ensemble across families) without
        replacing the slot's promoted model; the family's previous member steps down. Refuses a model whose
        gates failed unless ``force``, and a family whose member is the slot's promoted model (promote instead)."""
        with self._write() as tx:
            row = _passed_or_forced(self._get_in(tx.con, model_id, version), force, "make it a member")
            current = self._promoted_in(tx.con, row["slot"])
            if current is not None and current["family"] == row["family"] and _key(current) != _key(row):
                raise UserError(
                    f"the {row['family']} member of {row['slot']} is its promoted model "
                    f"{_ref(current)}: promote {_ref(row)} to replace it",
                    row["slot"],
                )
            self._set_member(tx, row)
            row = self._get_in(tx.con, row["model_id"], row["version"])
        self.export_json()
        return row

    def members(self, slot: str) -> dict[str, dict]:
        """Family -> the row each family serves in ``slot`` (the promoted model's family included)."""
        slot = _checked_slot(slot)
        with self._read() as con:
            return {family: row for (_, family), row in self._members_in(con, slot).items()}

    def member_path(self, slot: str, family: str) -> Path:
        """The stable link path of a family's member in a slot, after every link was reconciled."""
        link = self._member_link_path(slot, family)
        self.reconcile()
        return link

    def rollback(self, slot: str) -> dict:
        """Archive the slot's promoted model and restore the one promoted before it (from history)."""
        slot = _checked_slot(slot)
        with self._write() as tx:
            current = self._promoted_in(tx.con, slot)
            if current is None:
                raise UserError("nothing is promoted in this slot, so nothing to roll back", slot)
            target = self._rollback_target(tx.con, slot, current)
            if target is None:
                raise UserError(f"nothing to roll back to: {_ref(current)} is the only model ever promoted here", slot)
            self._promote_in(tx, target, action="rollback")
            row = self._get_in(tx.con, target["model_id"], target["version"])
        self.export_json()
        log.info("registry: %s rolled back from %s to %s", slot, _ref(current), _ref(row))
        return {**row, "promoted": True, "previous": _ref(current)}

    def prune(self, keep: int) -> list[tuple[str, int]]:
        """Per slot, delete candidate rows beyond the ``keep`` newest and their store dirs; returns them."""
        if keep < 0:
            raise UserError(f"keep must be >= 0, got {keep}", "prune")
        with self._write() as tx:
            pruned = self._prune_in(tx, keep)
        self.export_json()
        return pruned

    def export_json(self) -> Path:
        """Write ``registry.json`` (all rows, promotion history, what each slot's link points to) atomically."""
        path = self.root / EXPORT_NAME
        # taken under the write lock so exports are ordered: the last one written always shows the newest state
        with self._write() as tx:
            doc = {
                "root": str(self.root),
                "exported_at": _utc_now(),
                "promoted": {r["slot"]: _ref(r) for r in self._select(tx.con, "WHERE stage = 'promoted'")},
                "members": {f"{slot}@{family}": _ref(r) for (slot, family), r in self._members_in(tx.con).items()},
                "models": self._select(tx.con),
                "promotions": [dict(r) for r in tx.con.execute("SELECT * FROM promotions ORDER BY id")],
            }
            tmp = self.root / f".{EXPORT_NAME}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
            try:
                tmp.write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n")
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
        return path

    def get(self, model_id: str, version: int | None = None) -> dict:
        """One row; ``version=None`` means the newest version of ``model_id``. UserError when unknown."""
        with self._read() as con:
            return self._get_in(con, model_id, version)

    def rows(self, slot: str | None = None, stage: str | None = None) -> list[dict]:
        """All rows, oldest first, optionally only one slot and/or one stage."""
        where, args = [], []
        if slot is not None:
            where.append("slot = ?")
            args.append(_checked_slot(slot))
        if stage is not None:
            if stage not in STAGES:
                raise UserError(f"unknown stage {stage!r}; one of {', '.join(STAGES)}", "stage")
            where.append("stage = ?")
            args.append(stage)
        with self._read() as con:
            return self._select(con, ("WHERE " + " AND ".join(where)) if where else "", args)

    def promoted(self, slot: str) -> dict | None:
        """The promoted row of a slot, or None."""
        slot = _checked_slot(slot)
        with self._read() as con:
            return self._promoted_in(con, slot)

    def promoted_path(self, slot: str) -> Path:
        """The stable link path the runtime loads for a slot (it exists once a model is promoted there),
        after every link was reconciled with the database."""
        link = self._link_path(slot)
        self.reconcile()
        return link

    def reconcile(self) -> None:
        """Make every slot's link point at the row the database calls promoted (a link of a slot with no
        promoted row is removed) and remove what killed writers left; every write does this first."""
        with self._write():
            pass

    def _link_path(self, slot: str) -> Path:
        return self.promoted_dir.joinpath(*_checked_slot(slot).split("/"))

    def _member_link_path(self, slot: str, family: str) -> Path:
        return self.families_dir.joinpath(*_checked_slot(slot).split("/"), _checked_part("family", family))

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.db_path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        con.row_factory = sqlite3.Row
        con.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        return con

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with _database_errors(self.db_path):
            con = self._connect()
            try:
                yield con
            finally:
                con.close()

    @contextmanager
    def _write(self) -> Iterator[_Txn]:
        with _database_errors(self.db_path):
            con = self._connect()
            try:
                con.execute("BEGIN IMMEDIATE")
                tx = _Txn(con)
                try:
                    self._heal_links(tx)
                    self._remove_leftovers()
                    yield tx
                    con.execute("COMMIT")
                except BaseException:
                    if con.in_transaction:
                        con.execute("ROLLBACK")
                    for step in reversed(tx.undo):
                        try:
                            step()
                        except OSError:
                            log.warning(
                                "registry: could not undo a filesystem step after a failed write", exc_info=True
                            )
                    raise
            finally:
                con.close()
        for step in tx.after_commit:
            step()

    def _select(self, con: sqlite3.Connection, where: str = "", args: list | tuple = ()) -> list[dict]:
        return [
            self._row(r) for r in con.execute(f"SELECT * FROM models {where} ORDER BY registered_at, version", args)
        ]

    def _row(self, r: sqlite3.Row) -> dict:
        row = dict(r)
        row["metrics"] = json.loads(row.pop("metrics_json"))
        row["gates"] = json.loads(row.pop("gates_json"))
        row["economics"] = json.loads(row.pop("economics_json") or "{}")
        row["data_sources"] = json.loads(row.pop("data_sources_json") or "{}")
        row["model_dir"] = str(self.root / row["model_dir"])
        return row

    def _get_in(self, con: sqlite3.Connection, model_id: str, version: int | None) -> dict:
        versions = [
            r[0] for r in con.execute("SELECT version FROM models WHERE model_id = ? ORDER BY version", (model_id,))
        ]
        if not versions:
            raise UserError(f"unknown model id {model_id!r}", str(self.root))
        if version is None:
            version = versions[-1]
        elif version not in versions:
            raise UserError(
                f"{model_id} has no version {version} (versions: {', '.join(map(str, versions))})", str(self.root)
            )
        return self._select(con, "WHERE model_id = ? AND version = ?", (model_id, version))[0]

    def _promoted_in(self, con: sqlite3.Connection, slot: str) -> dict | None:
        found = self._select(con, "WHERE slot = ? AND stage = 'promoted'", (slot,))
        return found[-1] if found else None

    def _members_in(self, con: sqlite3.Connection, slot: str | None = None) -> dict[tuple[str, str], dict]:
        """(slot, family) -> member row: the recorded members, and each promoted row for its family where none
        is recorded (a registry written before members were kept)."""
        where, args = ("WHERE slot = ?", (slot,)) if slot is not None else ("", ())
        members = {}
        for r in con.execute(f"SELECT slot, family, model_id, version FROM family_members {where}", args).fetchall():
            found = self._select(con, "WHERE model_id = ? AND version = ?", (r["model_id"], r["version"]))
            if found:
                members[(r["slot"], r["family"])] = found[0]
        for row in self._select(con, "WHERE stage = 'promoted'" + (" AND slot = ?" if slot is not None else ""), args):
            members.setdefault((row["slot"], row["family"]), row)
        return members

    def _set_member(self, tx: _Txn, row: dict) -> None:
        """``row`` serves its family in its slot; the member link re-pointed (restored if the write rolls back)."""
        tx.con.execute(
            "INSERT OR REPLACE INTO family_members (slot, family, model_id, version, at) VALUES (?, ?, ?, ?, ?)",
            (row["slot"], row["family"], row["model_id"], row["version"], _utc_now()),
        )
        link = self._member_link_path(row["slot"], row["family"])
        link.parent.mkdir(parents=True, exist_ok=True)
        old = os.readlink(link) if link.is_symlink() else None
        _replace_symlink(link, os.path.relpath(row["model_dir"], link.parent))
        tx.undo.append(lambda: _replace_symlink(link, old) if old is not None else link.unlink(missing_ok=True))

    def _promote_in(self, tx: _Txn, row: dict, action: str) -> None:
        """Previous promoted -> archived, ``row`` -> promoted, history row, link re-pointed: one transaction.
        ``row`` becomes its family's member; a model rolled back from serves no family any more."""
        con, now = tx.con, _utc_now()
        current = self._promoted_in(con, row["slot"])
        con.execute("UPDATE models SET stage = 'archived' WHERE slot = ? AND stage = 'promoted'", (row["slot"],))
        con.execute(
            "UPDATE models SET stage = 'promoted', promoted_at = ? WHERE model_id = ? AND version = ?",
            (now, row["model_id"], row["version"]),
        )
        con.execute(
            "INSERT INTO promotions (slot, model_id, version, action, at, previous_model_id, previous_version)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                row["slot"],
                row["model_id"],
                row["version"],
                action,
                now,
                current["model_id"] if current else None,
                current["version"] if current else None,
            ),
        )
        self._point_link(tx, row)
        self._set_member(tx, row)
        if action == "rollback" and current is not None and current["family"] != row["family"]:
            tx.con.execute(
                "DELETE FROM family_members WHERE slot = ? AND family = ? AND model_id = ? AND version = ?",
                (current["slot"], current["family"], current["model_id"], current["version"]),
            )

    def _heal_links(self, tx: _Txn) -> None:
        """Under the write lock: every slot's link points at the row the database calls promoted, and a link
        of a slot with no promoted row is removed. A writer killed between re-pointing a link and committing
        leaves a link ahead of the database (on a slot's first promotion, at a version with no row)."""
        promoted = {
            row["slot"]: dict(row)
            for row in tx.con.execute("SELECT model_id, version, slot, model_dir FROM models WHERE stage = 'promoted'")
        }
        for slot, row in promoted.items():
            link = self._link_path(slot)
            want = os.path.relpath(self.root / row["model_dir"], link.parent)
            if not link.is_symlink() or os.readlink(link) != want:
                log.warning("registry: link %s did not point at the promoted %s; repaired", link, _ref(row))
                link.parent.mkdir(parents=True, exist_ok=True)
                _replace_symlink(link, want)  # matches the committed state: kept even if this write rolls back
        for link in self._links():
            if link.relative_to(self.promoted_dir).as_posix() not in promoted:
                log.warning(
                    "registry: link %s served %s, which the registry never promoted there; removed",
                    link,
                    os.readlink(link),
                )
                link.unlink()
        members = self._members_in(tx.con)
        for (slot, family), row in members.items():
            link = self._member_link_path(slot, family)
            want = os.path.relpath(row["model_dir"], link.parent)
            if not link.is_symlink() or os.readlink(link) != want:
                log.warning("registry: member link %s did not point at %s; repaired", link, _ref(row))
                link.parent.mkdir(parents=True, exist_ok=True)
                _replace_symlink(link, want)
        for link in self._links(self.families_dir):
            slot, _, family = link.relative_to(self.families_dir).as_posix().rpartition("/")
            if (slot, family) not in members:
                log.warning(
                    "registry: member link %s served %s, which no family member is; removed", link, os.readlink(link)
                )
                link.unlink()

    def _links(self, under: Path | None = None) -> Iterator[Path]:
        """Every link under promoted/ (or ``under``; temp links of a killed writer are removed instead)."""
        for folder, dirs, files in os.walk(self.promoted_dir if under is None else under):
            for name in dirs + files:
                path = Path(folder) / name
                if not path.is_symlink():
                    continue
                if name.startswith(".") and name.endswith(".tmp"):
                    path.unlink(missing_ok=True)
                else:
                    yield path

    def _remove_leftovers(self) -> None:
        """Under the write lock: staging folders of killed registrations and temp export files."""
        for tmp in self.root.glob(f".{EXPORT_NAME}.*.tmp"):
            tmp.unlink(missing_ok=True)
        _remove_abandoned_staging(self.models_dir)

    def _point_link(self, tx: _Txn, row: dict) -> None:
        """Atomically point the slot's link at the row's store dir (restored if the transaction rolls back)."""
        link = self._link_path(row["slot"])
        link.parent.mkdir(parents=True, exist_ok=True)
        old = os.readlink(link) if link.is_symlink() else None
        _replace_symlink(link, os.path.relpath(row["model_dir"], link.parent))
        tx.undo.append(lambda: _replace_symlink(link, old) if old is not None else link.unlink(missing_ok=True))

    def _rollback_target(self, con: sqlite3.Connection, slot: str, current: dict) -> dict | None:
        """The model promoted before the current one: history replayed as a stack (promote pushes,
        rollback pops back to the model it restored)."""
        stack: list[tuple[str, int]] = []
        for h in con.execute("SELECT model_id, version, action FROM promotions WHERE slot = ? ORDER BY id", (slot,)):
            key = (h["model_id"], h["version"])
            if h["action"] == "promote":
                stack.append(key)
            else:
                while stack and stack[-1] != key:
                    stack.pop()
                if not stack:
                    stack.append(key)
        while stack:
            key = stack.pop()
            if key == _key(current):
                continue
            found = self._select(con, "WHERE model_id = ? AND version = ?", key)
            if found:
                return found[0]
        return None

    def _prune_in(self, tx: _Txn, keep: int) -> list[tuple[str, int]]:
        pruned: list[tuple[str, int]] = []
        slots = [r[0] for r in tx.con.execute("SELECT DISTINCT slot FROM models WHERE stage = 'candidate'")]
        for slot in slots:
            rows = tx.con.execute(
                "SELECT model_id, version, model_dir FROM models WHERE slot = ? AND stage = "
                "'candidate' AND NOT EXISTS (SELECT 1 FROM family_members f WHERE f.model_id = "
                "models.model_id AND f.version = models.version) "  # a member serves: kept
                "ORDER BY registered_at DESC, version DESC",
                (slot,),
            ).fetchall()
            for r in rows[keep:]:
                tx.con.execute("DELETE FROM models WHERE model_id = ? AND version = ?", (r["model_id"], r["version"]))
                pruned.append((r["model_id"], r["version"]))
                store = self.root / r["model_dir"]
                tx.after_commit.append(lambda store=store: shutil.rmtree(store, ignore_errors=True))
        return pruned


def model_id_for(record: dict) -> str:
    """``<family>_<symbol>_<timeframe>_<hash8>``; hash8 = sha256(config_hash + data_fingerprint)[:8]."""
    digest = hashlib.sha256(f"{record['config_hash']}{record['data_fingerprint']}".encode()).hexdigest()[:8]
    return f"{record['family']}_{record['symbol']}_{record['timeframe']}_{digest}"


def _checked_record(record: dict) -> dict:
    missing = [k for k in RECORD_KEYS if k not in record]
    if missing:
        raise UserError(f"registry record lacks {', '.join(missing)}", "register")
    rec = {k: record[k] for k in RECORD_KEYS}
    for k in ("family", "symbol", "timeframe", "target"):
        rec[k] = _checked_part(k, rec[k])
    rec["slot"] = f"{rec['symbol']}/{rec['timeframe']}/{rec['target']}"
    rec["metrics"] = _plain(rec["metrics"] or {})
    rec["gates"] = _plain(rec["gates"] or {})
    economics = record.get("economics")
    if economics is not None and not isinstance(economics, dict):
        raise UserError("economics must be a dict", "register")
    rec["economics"] = {k: _plain(economics.get(k)) for k in ECONOMICS_KEYS} if economics is not None else {}
    sources = record.get("data_sources") or {}  # optional: symbol -> the file or feed its candles came from
    if not isinstance(sources, dict):
        raise UserError("data_sources must map symbols to sources", "register")
    rec["data_sources"] = {str(k): str(v) for k, v in sources.items()}
    if not isinstance(rec["gates"], dict) or not isinstance(rec["metrics"], dict):
        raise UserError("metrics and gates must be dicts", "register")
    value = _plain(rec["headline_value"])
    rec["headline_value"] = float(value) if isinstance(value, (int, float)) else None
    for k in ("headline", "run_id", "run_dir", "git_commit", "config_hash", "data_fingerprint"):
        rec[k] = None if rec[k] is None else str(rec[k])
    return rec


def _checked_part(name: str, value) -> str:
    text = str(value) if value is not None else ""
    if not text or text in (".", "..") or any(c in text for c in "/\\:\0") or text.startswith("."):
        raise UserError(f"{name} {text!r} cannot name a registry path (empty, '.', or contains / \\ :)", name)
    return text


def _checked_slot(slot: str) -> str:
    parts = str(slot).strip("/").split("/")
    if len(parts) != 3:
        raise UserError(f"slot {slot!r} is not <symbol>/<timeframe>/<target>", "slot")
    for name, part in zip(("symbol", "timeframe", "target"), parts):
        _checked_part(name, part)
    return "/".join(parts)


def _plain(obj):
    """JSON-safe plain values: numpy scalars/arrays unwrapped, NaN/inf -> None."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, bool) or obj is None or isinstance(obj, (int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if hasattr(obj, "tolist"):  # numpy scalar or array, without importing numpy here
        return _plain(obj.tolist())
    return str(obj)


def _dumps(obj) -> str:
    return json.dumps(obj, sort_keys=True, allow_nan=False)


def _add_economics_column(con: sqlite3.Connection) -> None:
    """A registry created before economics were recorded gains the column (its rows read as {})."""
    if "economics_json" not in {r[1] for r in con.execute("PRAGMA table_info(models)")}:
        con.execute("ALTER TABLE models ADD COLUMN economics_json TEXT NOT NULL DEFAULT '{}'")


def _add_data_sources_column(con: sqlite3.Connection) -> None:
    """A registry created before data sources were recorded gains the column (its rows read as {})."""
    if "data_sources_json" not in {r[1] for r in con.execute("PRAGMA table_info(models)")}:
        con.execute("ALTER TABLE models ADD COLUMN data_sources_json TEXT NOT NULL DEFAULT '{}'")


def _next_version(con: sqlite3.Connection, model_id: str) -> int:
    """Allocated inside the write transaction, so concurrent writers never share a version."""
    con.execute(
        "INSERT INTO version_counters (model_id, last_version) VALUES (?, 1) ON CONFLICT (model_id) DO "
        "UPDATE SET last_version = last_version + 1",
        (model_id,),
    )
    return con.execute("SELECT last_version FROM version_counters WHERE model_id = ?", (model_id,)).fetchone()[0]


def _passed_or_forced(row: dict, force: bool, action: str) -> dict:
    """The row, unless its gates failed and the caller did not force ``action``."""
    if not _gates_passed(row) and not force:
        raise UserError(
            f"{_ref(row)} failed its promotion gates; pass force=True (--force) to {action} anyway", row["slot"]
        )
    return row


def _gates_passed(row: dict) -> bool:
    return row["gates"].get("passed") is True


def _economic(row: dict) -> dict:
    return (row.get("economics") or {}).get("economic") or {}


def _trading(row: dict) -> dict:
    return (row.get("economics") or {}).get("trading") or {}


def _economics_passed(row: dict) -> bool | None:
    """The economic checks' verdict; None for a row registered without economics (an older record)."""
    if not row.get("economics"):
        return None
    return _economic(row).get("passed") is True


def _dsr(row: dict) -> float | None:
    dsr = _economic(row).get("dsr")
    if isinstance(dsr, dict):
        dsr = dsr.get("dsr")
    return float(dsr) if isinstance(dsr, (int, float)) and not isinstance(dsr, bool) else None


def economic_score(row: dict) -> tuple[float, float] | None:
    """What ranks models that may trade: the Deflated Sharpe Ratio, then the test net return (None = no
    economic evidence recorded)."""
    dsr, net = _dsr(row), _trading(row).get("total_return")
    if dsr is None and not isinstance(net, (int, float)):
        return None
    return (-math.inf if dsr is None else dsr, -math.inf if not isinstance(net, (int, float)) else float(net))


def _beats(new: dict, current: dict | None) -> bool:
    """Auto-promotion rule: gates and economic checks passed, and at least as good as the promoted model on
    the economic score (DSR, then net return), or, for rows recorded without economics, on the same headline."""
    if not _gates_passed(new) or _economics_passed(new) is False:
        return False
    if current is None or _economics_passed(current) is False:
        return True  # an empty slot, or a model forced past its economic checks: the tradeable one wins
    new_score, current_score = economic_score(new), economic_score(current)
    if new_score is not None and current_score is not None:
        return new_score >= current_score
    if new["headline_value"] is None or new["headline"] != current["headline"]:
        return False  # no number, or a different metric: a person decides (`promote`)
    return current["headline_value"] is None or new["headline_value"] >= current["headline_value"]


def _key(row: dict) -> tuple[str, int]:
    return row["model_id"], row["version"]


def _ref(row: dict) -> str:
    return f"{row['model_id']}:{row['version']}"


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _replace_symlink(link: Path, target: str) -> None:
    tmp = link.parent / f".{link.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    os.symlink(target, tmp)
    try:
        os.replace(tmp, link)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def resolve_link(path: str | Path) -> Path:
    """Where a model path really leads: for ``<root>/promoted/<symbol>/<timeframe>/<target>`` of a registry,
    the model the database promoted in that slot (the link itself once reconciled, or that row's store dir if
    it moved meanwhile), so a link a killed writer left never serves an unregistered model; any other path
    unchanged."""
    given = Path(path)
    where = Path(os.path.abspath(given))
    if len(where.parts) >= 6 and where.parents[3].name == "families" and (where.parents[4] / DB_NAME).is_file():
        return _resolve_member(given, where)
    if len(where.parts) < 5 or where.parents[2].name != "promoted" or not (where.parents[3] / DB_NAME).is_file():
        return given
    slot = "/".join(where.parts[-3:])
    try:
        slot = _checked_slot(slot)
    except UserError:
        return given
    registry = Registry(where.parents[3])
    registry.reconcile()
    row = registry.promoted(slot)
    if row is None:
        raise UserError(f"no model is promoted in slot {slot}", str(given))
    if where.resolve() == Path(row["model_dir"]).resolve():
        return given  # the link serves exactly the promoted row
    return Path(row["model_dir"])  # a promotion moved it since: serve the row the database names


def _resolve_member(given: Path, where: Path) -> Path:
    """``<root>/families/<symbol>/<timeframe>/<target>/<family>``: the store dir of that family's member."""
    try:
        slot = _checked_slot("/".join(where.parts[-4:-1]))
    except UserError:
        return given
    registry = Registry(where.parents[4])
    registry.reconcile()
    member = registry.members(slot).get(where.name)
    if member is None:
        raise UserError(f"no {where.name} model serves slot {slot}", str(given))
    if where.resolve() == Path(member["model_dir"]).resolve():
        return given  # the link serves exactly the member row
    return Path(member["model_dir"])


@contextmanager
def _database_errors(db_path: Path) -> Iterator[None]:
    """A registry.db that is not an SQLite database of ours (garbage, damaged, unreadable) is a user's to fix."""
    try:
        yield
    except (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.InterfaceError):
        raise
    except sqlite3.DatabaseError as exc:
        raise UserError(
            f"the registry database cannot be used: {str(exc)[:200]}; move it aside or restore a copy", str(db_path)
        ) from exc


@contextmanager
def _flocked(folder: Path, mode: int) -> Iterator[int]:
    """An flock on a folder itself (no lock file to leave behind); the kernel drops it when its process dies."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, mode)
        yield fd
    finally:
        os.close(fd)


def _claim_staging(models_dir: Path) -> tuple[Path, int]:
    """A new staging folder in the store and a descriptor holding its lock (released when this process ends,
    however). Created and locked under a shared lock of the store, which a cleaner takes exclusively: a cleaner
    never sees a staging folder in the instant between its creation and its lock."""
    with _flocked(models_dir, fcntl.LOCK_SH):
        staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=models_dir))
        fd = os.open(staging, os.O_RDONLY | os.O_DIRECTORY)
        fcntl.flock(fd, fcntl.LOCK_EX)
    return staging, fd


def _unlocked_staging(models_dir: Path) -> list[Path]:
    """Staging folders no live process holds (a writer in the creation instant may show here too)."""
    found = []
    with os.scandir(models_dir) as entries:
        for entry in entries:
            if not entry.name.startswith(STAGING_PREFIX):
                continue
            try:
                fd = os.open(entry.path, os.O_RDONLY | os.O_DIRECTORY)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                found.append(Path(entry.path))
            except BlockingIOError:
                pass  # a live registration is copying into it
            finally:
                os.close(fd)
    return found


def _remove_abandoned_staging(models_dir: Path) -> None:
    """Remove every staging folder whose registration was killed (no live process holds its lock)."""
    if not _unlocked_staging(models_dir):
        return
    with _flocked(models_dir, fcntl.LOCK_EX):  # now no writer is between creating and locking its folder
        for staging in _unlocked_staging(models_dir):
            log.warning("registry: removing %s, left by a registration that was killed", staging)
            shutil.rmtree(staging, ignore_errors=True)


def _check_made_by(model_dir: Path, run_id: str | None, source: Path) -> None:
    """Refuse a model dir whose card names another run: two runs wrote into one folder."""
    try:
        card = json.loads((model_dir / MODEL_CARD).read_text())
    except (OSError, ValueError):
        card = None
    made_by = card.get("run_id") if isinstance(card, dict) else None
    if made_by is None:
        raise UserError(
            f"the model dir has no readable {MODEL_CARD} naming the run that made it: refused, it "
            "cannot be told apart from another run's model",
            str(source),
        )
    if run_id is None or str(made_by) != run_id:
        raise UserError(
            f"the model dir was made by run {made_by}, not by run {run_id} that registers it: "
            "refused (did two runs share a run folder?)",
            str(source),
        )


def default_root() -> Path:
    """Where `registry.root` points by default: <output_dir>/registry, as conf/paths resolves output_dir."""
    out = os.environ.get("CANDLELAB_OUTPUT_DIR")
    if out:
        return Path(out) / "registry"
    base = os.environ.get("CANDLELAB_ROOT")
    return (Path(base) if base else Path.cwd()) / "outputs" / "registry"


def _parse_ref(ref: str) -> tuple[str, int | None]:
    head, sep, tail = ref.rpartition(":")
    if sep and tail.isdigit():
        return head, int(tail)
    return ref, None


def _table(header: list[str], body: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *body)]
    lines = [header, ["-" * w for w in widths], *body]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines)


def _num(value) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "-" if value is None else str(value)
    return str(value) if isinstance(value, int) else f"{value:.4f}"


def _pct(value) -> str:
    return "-" if not isinstance(value, (int, float)) or isinstance(value, bool) else f"{value * 100:+.2f}%"


def _fixed(value, digits: int = 2) -> str:
    return "-" if not isinstance(value, (int, float)) or isinstance(value, bool) else f"{value:.{digits}f}"


def _profit_factor(trading: dict) -> str:
    return "inf" if trading.get("no_losing_trades") else _fixed(trading.get("profit_factor"))


def _economic_word(row: dict) -> str:
    passed = _economics_passed(row)
    return "-" if passed is None else "pass" if passed else "fail"


def _economic_cells(row: dict) -> list[str]:
    """Net return, profit factor, trades and DSR of the test trades: what a model is promoted on."""
    t = _trading(row)
    trades = t.get("n_trades")
    return [
        _pct(t.get("total_return")),
        _profit_factor(t),
        "-" if trades is None else str(trades),
        _fixed(_dsr(row), 3),
        _economic_word(row),
    ]


def _list_line(row: dict) -> list[str]:
    return [
        row["model_id"],
        str(row["version"]),
        row["slot"],
        row["stage"],
        row["family"],
        f"{row['headline']}={_num(row['headline_value'])}",
        *_economic_cells(row),
        "pass" if _gates_passed(row) else "fail",
        row["registered_at"][:19].replace("T", " "),
    ]


LIST_HEADER = [
    "id",
    "v",
    "slot",
    "stage",
    "family",
    "headline",
    "net",
    "pf",
    "trades",
    "dsr",
    "econ",
    "gates",
    "registered",
]


def _tiers_table(tiers: list, indent: str = "    ") -> list[str]:
    """Calibration by confidence tier as rows: tier, rows, how sure, how often right, gap."""
    body = [
        [
            str(t.get("tier")),
            str(t.get("n")),
            _fixed(t.get("mean_confidence"), 3),
            _fixed(t.get("observed"), 3),
            "-" if t.get("gap") is None else f"{t['gap']:+.3f}",
        ]
        for t in tiers
        if isinstance(t, dict)
    ]
    table = _table(["tier", "n", "confidence", "observed", "gap"], body)
    return [indent + line for line in table.splitlines()]


def _value(v) -> str:
    return _num(v) if not isinstance(v, (dict, list)) else json.dumps(v)


def _check_line(name: str, check) -> str:
    if not isinstance(check, dict):
        return f"  {name:<15} {_value(check)}"
    word = {True: "pass", False: "fail"}.get(check.get("passed"), "n/a")
    rest = ", ".join(f"{k} {_value(v)}" for k, v in check.items() if k != "passed")
    return f"  {name:<15} {word}" + (f" ({rest})" if rest else "")


def _economics_lines(row: dict) -> list[str]:
    econ = row.get("economics") or {}
    if not econ:
        return ["economic          - (registered without trading evidence)"]
    e, verdict, policy = _economic(row), econ.get("verdict") or {}, econ.get("policy")
    lines = [f"{'economic':<17} {_economic_word(row)} (trials {_num(e.get('n_trials'))}, DSR {_fixed(_dsr(row), 3)})"]
    checks = e.get("checks") or {}
    lines += [_check_line(k, c) for k, c in (checks.items() if isinstance(checks, dict) else [])]
    if verdict:
        lines.append(f"{'verdict':<17} {verdict.get('label') or '-'}")
    lines.append(f"{'policy':<17} {_policy_text(policy)}")
    t = _trading(row)
    lines.append("trading (test)")
    lines.append(f"  {'net_return':<15} {_pct(t.get('total_return'))}")
    lines.append(f"  {'profit_factor':<15} {_profit_factor(t)}")
    lines += [
        f"  {k:<15} {_value(t.get(k))}" for k in ("n_trades", "win_rate", "avg_trade_return", "sharpe", "max_drawdown")
    ]
    return lines


def _policy_text(policy) -> str:
    if not isinstance(policy, dict):
        return "- (none recorded: the runtime refuses this model)"
    sides = [
        f"{side} p>={policy[side + '_threshold']:.2f}"
        for side in ("long", "short")
        if isinstance(policy.get(side + "_threshold"), (int, float))
    ]
    text = (
        f"{', '.join(sides) or 'never trade'}, hold {policy.get('horizon')} candles, chosen on "
        f"{policy.get('chosen_on')}"
    )
    val = policy.get("validation") or {}
    if isinstance(val, dict) and val.get("expectancy_bps") is not None:
        text += f"; validation {_fixed(val['expectancy_bps'])} bps/trade over {_num(val.get('n_trades'))} trades"
    elif isinstance(val, dict) and val.get("reason"):
        text += f"; {val['reason']}"
    return text


def _show(reg: Registry, row: dict) -> str:
    fields = [
        "model_id",
        "version",
        "slot",
        "stage",
        "family",
        "symbol",
        "timeframe",
        "target",
        "registered_at",
        "promoted_at",
        "headline",
        "headline_value",
        "run_id",
        "run_dir",
        "git_commit",
        "config_hash",
        "data_fingerprint",
        "model_dir",
    ]
    lines = [
        f"{k:<17} {_num(row[k]) if k == 'headline_value' else ('-' if row[k] is None else row[k])}" for k in fields
    ]
    lines += [f"{'data ' + sym:<17} {src}" for sym, src in (row.get("data_sources") or {}).items()]
    if row["stage"] == "promoted":
        lines.append(f"{'link':<17} {reg.promoted_path(row['slot'])}")
    lines.append(f"{'gates':<17} {'pass' if _gates_passed(row) else 'fail'}")
    lines += [f"  {k:<15} {_value(v)}" for k, v in row["gates"].items() if k != "passed"]
    lines += _economics_lines(row)
    lines.append("metrics")
    for k, v in row["metrics"].items():
        if k == "confidence_tiers" and isinstance(v, list):
            lines.append(f"  {k}")
            lines += _tiers_table(v)
        else:
            lines.append(f"  {k:<15} {_value(v)}")
    return "\n".join(lines)


def compare_order(rows: list[dict]) -> list[dict]:
    """Best first: economically passing models, then by DSR and net return; accuracy never decides alone."""

    def key(row: dict):
        score = economic_score(row) or (-math.inf, -math.inf)
        return (_economics_passed(row) is True, *score, row["headline_value"] or -math.inf)

    return sorted(rows, key=key, reverse=True)


def _tiers_cell(tiers) -> str:
    if not isinstance(tiers, list):
        return _num(tiers)
    return " ".join(
        f"{str(t.get('tier')).split('-')[0]}:{_fixed(t.get('observed'))}/{t.get('n')}"
        for t in tiers
        if isinstance(t, dict) and t.get("n")
    )


def _compare(rows: list[dict]) -> str:
    rows = compare_order(rows)
    names: list[str] = []
    for row in rows:
        names += [k for k in row["metrics"] if k not in names]
    header = ["metric", *(_ref(r) for r in rows)]
    econ = [_economic_cells(r) for r in rows]
    body = [
        ["rank", *(str(i + 1) for i in range(len(rows)))],
        ["slot", *(r["slot"] for r in rows)],
        ["stage", *(r["stage"] for r in rows)],
        ["gates", *("pass" if _gates_passed(r) else "fail" for r in rows)],
        ["economic", *(c[4] for c in econ)],
        ["dsr", *(c[3] for c in econ)],
        ["net_return", *(c[0] for c in econ)],
        ["profit_factor", *(c[1] for c in econ)],
        ["trades", *(c[2] for c in econ)],
        ["win_rate", *(_fixed(_trading(r).get("win_rate"), 3) for r in rows)],
        ["n_trials", *(_num(_economic(r).get("n_trials")) for r in rows)],
        ["headline", *(f"{r['headline']}={_num(r['headline_value'])}" for r in rows)],
    ]
    body += [
        [
            name,
            *(
                (_tiers_cell(r["metrics"].get(name)) if name == "confidence_tiers" else _num(r["metrics"].get(name)))
                for r in rows
            ),
        ]
        for name in names
    ]
    return _table(header, body)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m trainer.registry", description="The model registry: list, inspect, compare, promote, roll back."
    )
    parser.add_argument(
        "--root",
        type=Path,
        default=None,
        metavar="DIR",
        help="registry directory (default: $CANDLELAB_OUTPUT_DIR/registry, else "
        "$CANDLELAB_ROOT/outputs/registry, else ./outputs/registry)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("list", help="one line per registered model")
    p.add_argument("--slot", help="only this <symbol>/<timeframe>/<target>")
    p.add_argument("--stage", choices=STAGES, help="only this stage")
    p = sub.add_parser("show", help="every field, gate and metric of one model")
    p.add_argument("ref", metavar="ID[:VERSION]")
    p = sub.add_parser("compare", help="test metrics side by side, best economic score (DSR, net return) first")
    p.add_argument("refs", metavar="ID[:VERSION]", nargs="+")
    p = sub.add_parser("promote", help="make a model the promoted one of its slot")
    p.add_argument("ref", metavar="ID[:VERSION]")
    p.add_argument("--force", action="store_true", help="promote even though its gates failed")
    p.add_argument(
        "--member",
        action="store_true",
        help="only make it its family's member of the slot (served "
        "by an ensemble across families, runtime.families) beside the slot's promoted model",
    )
    p = sub.add_parser("rollback", help="restore the model promoted before the current one")
    p.add_argument("slot", metavar="SLOT", help="<symbol>/<timeframe>/<target>, e.g. BTC/1m/direction_h1")
    p = sub.add_parser("prune", help="delete candidates beyond the N newest per slot")
    p.add_argument("--keep", type=int, required=True, metavar="N")
    sub.add_parser("export", help=f"rewrite {EXPORT_NAME}")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    root = args.root if args.root is not None else default_root()
    try:
        if not (Path(root) / DB_NAME).is_file():
            raise UserError("no model registry here (a registry is created when the first model registers)", str(root))
        reg = Registry(root)
        if args.command == "list":
            rows = reg.rows(slot=args.slot, stage=args.stage)
            print(_table(LIST_HEADER, [_list_line(r) for r in rows]) if rows else "no models registered")
        elif args.command == "show":
            print(_show(reg, reg.get(*_parse_ref(args.ref))))
        elif args.command == "compare":
            print(_compare([reg.get(*_parse_ref(ref)) for ref in args.refs]))
        elif args.command == "promote" and args.member:
            row = reg.promote_member(*_parse_ref(args.ref), force=args.force)
            print(
                f"{_ref(row)} serves {row['family']} in {row['slot']}; link "
                f"{reg.member_path(row['slot'], row['family'])}"
            )
        elif args.command == "promote":
            row = reg.promote(*_parse_ref(args.ref), force=args.force)
            if row["promoted"]:
                print(
                    f"promoted {_ref(row)} in {row['slot']} (was {row['previous'] or 'none'}); "
                    f"link {reg.promoted_path(row['slot'])}"
                )
            else:
                print(f"{_ref(row)} is already promoted in {row['slot']}")
        elif args.command == "rollback":
            row = reg.rollback(args.slot)
            print(
                f"rolled back {row['slot']}: {_ref(row)} promoted again (was {row['previous']}); "
                f"link {reg.promoted_path(row['slot'])}"
            )
        elif args.command == "prune":
            pruned = reg.prune(args.keep)
            print(f"pruned {len(pruned)} candidate(s)" + "".join(f"\n  {m}:{v}" for m, v in pruned))
        elif args.command == "export":
            print(reg.export_json())
    except UserError as exc:
        sys.stderr.write(exc.line() + "\n")
        return EXIT_USER_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())
