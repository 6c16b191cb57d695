"""Replace folders by freshly built ones so that a crash at any moment leaves one complete collection.

Two renames cannot happen at once, so a journal beside the folder (``<name>.swap.json``,
written before the first rename and removed after the last) says a swap is under
way. Whoever finds it (the next open, or a rerun of the same command) finishes
the swap: the new folder goes live if it survived, else the old one comes back.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from .atomic import fsync_directory, write_json_atomically
from .errors import CorruptCollectionError
from .faults import kill_point

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Replacement:
    """``new`` becomes ``live``; the old ``live`` is parked at ``retired`` until the swap is complete."""

    live: Path
    new: Path

    @property
    def retired(self) -> Path:
        return self.live.with_name(self.live.name + ".retired")


def journal_path(live: Path) -> Path:
    return live.with_name(live.name + ".swap.json")


def replace(replacements: list[Replacement]) -> None:
    """Put every ``new`` folder in place of its ``live`` one; the journal is kept by the first ``live``."""
    journal = journal_path(replacements[0].live)
    write_json_atomically(journal, {"replacements": [{"live": str(r.live), "new": str(r.new)} for r in replacements]})
    for replacement in replacements:
        if replacement.live.exists():
            shutil.rmtree(replacement.retired, ignore_errors=True)  # a leftover of a cleanup cut short
            replacement.live.rename(replacement.retired)
            kill_point("reindex.swap")
        replacement.new.rename(replacement.live)
        fsync_directory(replacement.live.parent)
    _done(journal, replacements)


def finish_interrupted(live: Path) -> bool:
    """Complete a swap that a crash interrupted at ``live`` (a no-op without a journal); True when one was found."""
    journal = journal_path(live)
    if not journal.exists():
        return False
    try:
        entries = json.loads(journal.read_text(encoding="utf-8"))["replacements"]
        replacements = [Replacement(Path(entry["live"]), Path(entry["new"])) for entry in entries]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CorruptCollectionError(
            f"{journal} records an interrupted swap of {live} but cannot be read ({exc}); restore {live} from "
            f"{live.name}.retired or {live.name}.reindexing by hand, then delete the journal"
        ) from exc
    # The journal is written once every new folder is complete: from then on the swap is decided, and each
    # new folder that has not gone live yet does now.
    for replacement in replacements:
        if replacement.new.exists():
            log.warning("finishing an interrupted swap: %s goes live as %s", replacement.new, replacement.live)
            if replacement.live.exists():
                shutil.rmtree(replacement.retired, ignore_errors=True)
                replacement.live.rename(replacement.retired)
            replacement.new.rename(replacement.live)
        elif not replacement.live.exists() and replacement.retired.exists():
            log.warning("an interrupted swap lost %s: %s is put back", replacement.new, replacement.retired)
            replacement.retired.rename(replacement.live)
        fsync_directory(replacement.live.parent)
    _done(journal, replacements)
    return True


def _done(journal: Path, replacements: list[Replacement]) -> None:
    journal.unlink()
    fsync_directory(journal.parent)
    for replacement in replacements:
        shutil.rmtree(replacement.retired, ignore_errors=True)
