"""sync_targets: the config's rivals and targets become rows; changes are written, removed targets are
deactivated (history kept), re-added ones come back, and fields the config does not set are left alone."""

from __future__ import annotations

from sqlalchemy import select, update

from tracker.config import parse_config
from tracker.db import Database
from tracker.models import Target
from tracker.targets import sync_targets

BASE = """\
database: sqlite:///unused.db
rivals:
  - name: Shop A
    fetch: http
    products:
      - {name: Kettle, url: "https://a.example/p/kettle", match: kettle-1}
      - {name: Toaster, url: "https://a.example/p/toaster"}
    listings:
      - {name: Kitchen, url: "https://a.example/c/kitchen"}
keywords:
  - {term: "electric kettle", engine: bing}
"""


def rows(db: Database) -> dict[tuple[str, str], Target]:
    with db.session() as s:
        return {(t.kind, t.key): t for t in s.scalars(select(Target))}


def sync(db: Database, text: str):  # type: ignore[no-untyped-def]
    with db.session() as s:
        return sync_targets(s, parse_config(text, env={}))


def test_sync_inserts_updates_deactivates_and_reactivates(tmp_path):
    db = Database.open(f"sqlite:///{tmp_path / 't.db'}")
    refs = sync(db, BASE)
    assert sorted((r.kind, r.name) for r in refs) == [
        ("listing", "Kitchen"), ("product", "Kettle"), ("product", "Toaster"), ("serp", "electric kettle")]
    first = rows(db)
    kettle = first[("product", "https://a.example/p/kettle")]
    assert (kettle.match_key, kettle.spec["fetch"], kettle.fail_streak) == ("kettle-1", "http", 0)
    assert kettle.created_at is not None and kettle.created_at.tzinfo is not None
    # Something outside the config sets a listing's group (say, a review): sync leaves it alone.
    with db.session() as s:
        s.execute(update(Target).where(Target.kind == "listing").values(group="kitchen"))

    changed = (BASE.replace("name: Kettle,", "name: Kettle 1.7 l,").replace("fetch: http", "fetch: browser")
               .replace('      - {name: Toaster, url: "https://a.example/p/toaster"}\n', ""))
    refs = sync(db, changed)
    assert sorted(r.name for r in refs) == ["Kettle 1.7 l", "Kitchen", "electric kettle"]
    after = rows(db)
    kettle2 = after[("product", "https://a.example/p/kettle")]
    assert kettle2.id == kettle.id and kettle2.name == "Kettle 1.7 l" and kettle2.spec["fetch"] == "browser"
    assert after[("product", "https://a.example/p/toaster")].active is False  # kept, with its history
    assert after[("listing", "https://a.example/c/kitchen")].group == "kitchen"

    sync(db, BASE)  # the toaster is back: the same row, active again
    again = rows(db)
    assert again[("product", "https://a.example/p/toaster")].active is True
    assert again[("product", "https://a.example/p/toaster")].id == first[("product", "https://a.example/p/toaster")].id
    assert len(again) == 4
    db.close()


def test_discovered_products_stay_tracked_without_being_in_the_config(tmp_path):
    db = Database.open(f"sqlite:///{tmp_path / 't.db'}")
    sync(db, BASE)
    with db.session() as s:
        rival_id = s.scalars(select(Target.rival_id).where(Target.kind == "product")).first()
        s.add(Target(rival_id=rival_id, kind="product", key="https://a.example/p/new", url="https://a.example/p/new",
                     spec={"fetch": "http", "discovered": True}, fail_streak=0))
    refs = sync(db, BASE)
    assert "https://a.example/p/new" in {r.url for r in refs}
    db.close()
