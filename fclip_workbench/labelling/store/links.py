"""Per-annotator links for a team server: a secret that carries an annotator's name and role.

The secret is shown once (in the link's URL) and stored only as its SHA-256 (`label_links`, in the
label store next to the events: SQLite or PostgreSQL). `check_link` turns a secret back into the
annotator and role, or raises AccessError saying why it is refused (unknown, expired, revoked).

Example:
    >>> from fclip_workbench.labelling.labels import LabelStore
    >>> import tempfile, os
    >>> store = LabelStore(os.path.join(tempfile.mkdtemp(), "l.sqlite"))
    >>> secret = create_link(store, "ana", days=7)
    >>> check_link(store, secret).annotator
    'ana'
"""
from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa

from fclip_workbench.errors import AccessError, InvalidArgumentError
from fclip_workbench.labelling.store import canon
from fclip_workbench.labelling.store.schema import utc

LINK_ROLES = ("annotator", "adjudicator", "lead")
PREFIX = "fcl_"  # link secrets start with it (server tokens do not)

links_metadata = sa.MetaData()  # its own metadata: created on first use, older stores need no upgrade
links_t = sa.Table(
    "label_links", links_metadata,
    sa.Column("secret_sha256", sa.Text, primary_key=True),  # hex digest; the secret itself is never stored
    sa.Column("annotator", sa.Text, nullable=False),
    sa.Column("role", sa.Text, nullable=False),  # one of LINK_ROLES
    sa.Column("created_by", sa.Text),
    sa.Column("created", sa.DateTime(timezone=True), nullable=False),  # UTC
    sa.Column("expires", sa.DateTime(timezone=True)),  # None: never
    sa.Column("revoked", sa.DateTime(timezone=True)),  # None: live
    sa.Index("ix_label_links_annotator", "annotator"),
)


@dataclass(frozen=True)
class Link:
    """A checked link: who it names, with which role, until when."""

    annotator: str
    role: str  # "annotator" | "adjudicator" | "lead"
    expires: datetime | None  # UTC; None: never


def digest(secret: str) -> str:
    """SHA-256 hex of a secret (secrets are 32 random bytes: no salt or slow hash needed).

    >>> len(digest("fcl_x"))
    64
    """
    return hashlib.sha256(secret.encode()).hexdigest()


def is_link_secret(secret: str | None) -> bool:
    """True for strings shaped like a link secret (`fcl_` + 43 url-safe characters)."""
    return secret is not None and secret.startswith(PREFIX) and 20 < len(secret) < 100


def _has_table(conn: sa.Connection) -> bool:
    return sa.inspect(conn).has_table("label_links")


def create_link(store, annotator: str, role: str = "annotator", days: float | None = 7.0,
                by: str | None = None, now: datetime | None = None) -> str:
    """A new link secret for `annotator` with `role`, valid `days` (None: no expiry); only its hash is kept.

    An adjudicator or lead link needs the role granted in the store (`fclip team grant`)."""
    name = canon.annotator(annotator)
    if role not in LINK_ROLES:
        raise InvalidArgumentError(f"unknown link role {role!r}; roles: {', '.join(LINK_ROLES)}")
    if days is not None and not days > 0:
        raise InvalidArgumentError(f"--expires must be a positive duration, got {days} days")
    if role != "annotator" and not store.has_role(name, role):
        raise InvalidArgumentError(f"{name} is not {role} in {store.name}: grant it first "
                                   f"(fclip team grant {name} {role} --by LEAD)")
    secret = PREFIX + secrets.token_urlsafe(32)
    created = now or datetime.now(timezone.utc)
    expires = None if days is None else created + timedelta(days=days)

    def work(conn: sa.Connection) -> None:
        links_t.create(conn, checkfirst=True)
        conn.execute(links_t.insert(), [{"secret_sha256": digest(secret), "annotator": name, "role": role,
                                         "created_by": by, "created": created, "expires": expires}])

    store._write(work)
    return secret


def check_link(store, secret: str, now: datetime | None = None) -> Link:
    """The link `secret` opens, or AccessError: unknown, revoked or expired (with the date)."""
    return check_digest(store, digest(secret), now)


def check_digest(store, hexdigest: str, now: datetime | None = None) -> Link:
    """`check_link` for a secret's SHA-256 (what a login cookie keeps)."""
    now = now or datetime.now(timezone.utc)
    with store._read() as conn:
        row = conn.execute(sa.select(links_t).where(links_t.c.secret_sha256 == hexdigest)).first() \
            if _has_table(conn) else None
    if row is None:
        raise AccessError("this link is not known to the label store: ask your lead for a new one "
                          "(fclip team link NAME)")
    m = row._mapping
    if m["revoked"] is not None:
        raise AccessError(f"this link of {m['annotator']} was revoked: ask your lead for a new one")
    expires = None if m["expires"] is None else utc(m["expires"])
    if expires is not None and expires <= now:
        raise AccessError(f"this link of {m['annotator']} expired on {expires:%Y-%m-%d %H:%M} UTC: "
                          "ask your lead for a new one (fclip team link NAME)")
    role = m["role"]
    if role != "annotator" and not store.has_role(m["annotator"], role):
        role = "annotator"  # the role was revoked since: the link still labels, without it
    return Link(annotator=m["annotator"], role=role, expires=expires)


def revoke_links(store, annotator: str) -> int:
    """Revoke every live link of `annotator`; the number revoked."""
    name = canon.annotator(annotator)

    def work(conn: sa.Connection) -> int:
        links_t.create(conn, checkfirst=True)
        res = conn.execute(links_t.update().where(links_t.c.annotator == name, links_t.c.revoked.is_(None))
                           .values(revoked=datetime.now(timezone.utc)))
        return int(res.rowcount or 0)

    return store._write(work)


def parse_duration(text: str) -> float | None:
    """Days in '7d', '12h', '30m', '2w'; 'never' gives None. InvalidArgumentError otherwise.

    >>> parse_duration("7d"), parse_duration("12h"), parse_duration("never")
    (7.0, 0.5, None)
    """
    units = {"w": 7.0, "d": 1.0, "h": 1 / 24, "m": 1 / 1440}
    t = text.strip().lower()
    if t == "never":
        return None
    try:
        value, unit = float(t[:-1]), t[-1]
        if unit in units and value > 0:
            return value * units[unit]
    except ValueError:
        pass
    raise InvalidArgumentError(f"--expires {text!r} is not a duration: give e.g. 7d, 12h, 30m, 2w or never")
