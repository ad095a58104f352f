"""Who may open a team server, and as whom: Jupyter's token auth plus per-annotator links.

`fclip label --host 0.0.0.0` runs Voila with `TeamIdentityProvider` (a jupyter_server
`PasswordIdentityProvider`): every request (page, kernel REST, kernel websocket, static files)
needs the server token or a link secret (`fclip team link NAME`) in `?token=` / an
`Authorization: token ...` header, or the login cookie the first such request set. Anything
else gets 403 with a one-line reason. The kernel takes the annotator from the link secret in
its `QUERY_STRING` (which the server accepted before starting it) and checks it again against
the store: `?annotator=` is ignored on a remote app.

Example (the kernel's side):
    >>> from fclip_workbench.apps import LabelAppConfig
    >>> app_identity(LabelAppConfig(field="colour"), "annotator=ana", store=None)
    ('ana', None)
"""
from __future__ import annotations

import logging
import os
import secrets
import urllib.parse

from jupyter_server.auth.identity import PasswordIdentityProvider, User
from tornado import web

from fclip_workbench.errors import AccessError, FclipError

log = logging.getLogger(__name__)

ENV_TOKEN = "FCLIP_LABEL_TOKEN"  # the server token, handed to Voila in the environment (not on its command line)
PROVIDER = f"{__name__}.TeamIdentityProvider"  # Voila.identity_provider_class
LINK_USER = "link:"  # username prefix of a link's user: "link:<sha256 of the secret>"


def new_token() -> str:
    """A fresh server token (48 hex characters)."""
    return secrets.token_hex(24)


def query_token(query_string: str | None) -> str | None:
    """The `token` parameter of a URL query string, or None.

    >>> query_token("token=abc&annotator=x"), query_token("")
    ('abc', None)
    """
    values = urllib.parse.parse_qs(query_string or "").get("token")
    return values[0] if values else None


def app_identity(config, query_string: str | None, store) -> tuple[str | None, str | None]:
    """(annotator, link role) for the app's kernel.

    Loopback app: the URL's ?annotator= or the configured one (role None: the store's roles apply).
    Remote app: the annotator and role of the link in ?token= (AccessError when unknown or expired);
    with the server token, the configured annotator (`--annotator`), else AccessError.
    """
    from fclip_workbench.apps import annotator_from_query

    if not getattr(config, "remote", False):
        return annotator_from_query(query_string) or config.annotator, None
    from fclip_workbench.labelling.store.links import check_link, is_link_secret

    token = query_token(query_string)
    if token is not None and is_link_secret(token):
        link = check_link(store, token)
        return link.annotator, link.role
    if config.annotator:
        return config.annotator, None
    raise AccessError("open the app through your own link (a lead makes one: fclip team link NAME): "
                      "this page does not say who you are")


class TeamIdentityProvider(PasswordIdentityProvider):
    """Jupyter's token auth that also accepts link secrets from the label store, and refuses with 403.

    The server token comes from $FCLIP_LABEL_TOKEN; the store from $FCLIP_LABEL_APP's config."""

    def __init__(self, **kwargs):
        token = os.environ.get(ENV_TOKEN)
        if token:
            kwargs["token"] = token
        super().__init__(**kwargs)
        self._store = None

    @property
    def store(self):
        """The label store, opened on the first link checked (the app's config names it)."""
        if self._store is None:
            from fclip_workbench.apps import LabelAppConfig, open_label_store

            self._store = open_label_store(LabelAppConfig.from_env().store)
        return self._store

    @property
    def login_available(self) -> bool:
        return False  # no password page: a link or the token, else 403

    async def get_user(self, handler: web.RequestHandler) -> User | None:
        user = await self._get_user(handler)
        if user is None:
            raise web.HTTPError(403, "this app needs your link (or the server token): "
                                     "open the URL your lead gave you")
        return user

    async def get_user_token(self, handler: web.RequestHandler) -> User | None:
        given = self.get_token(handler)
        if not given:
            return None
        if self.token and secrets.compare_digest(given, self.token):
            return await super().get_user_token(handler)
        from fclip_workbench.labelling.store.links import check_link, digest, is_link_secret

        if not is_link_secret(given):
            raise web.HTTPError(403, "wrong token: open the URL your lead gave you")
        try:
            link = check_link(self.store, given)
        except FclipError as e:
            raise web.HTTPError(403, str(e)) from None
        return User(username=LINK_USER + digest(given), name=link.annotator,
                    display_name=f"{link.annotator} ({link.role})")

    def user_from_cookie(self, cookie_value: str) -> User | None:
        """The cookie's user; a link's user only while its link is live (expiry and revocation apply)."""
        user = super().user_from_cookie(cookie_value)
        if user is not None and user.username.startswith(LINK_USER):
            from fclip_workbench.labelling.store.links import check_digest

            try:
                check_digest(self.store, user.username[len(LINK_USER):])
            except FclipError as e:
                raise web.HTTPError(403, str(e)) from None
        return user
