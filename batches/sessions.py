"""Django's database sessions (SESSION_ENGINE), with the one read every signed-in request makes
written in SQL once instead of built by the ORM each time: on a page served from the page cache
(batches/cache/pages.py) building that query cost more than running it. Everything else,
writes, expiry and clean-up included, is Django's own."""

from __future__ import annotations

from typing import Any

from django.contrib.sessions.backends import db
from django.db import connections, router
from django.utils import timezone


class SessionStore(db.SessionStore):
    def _get_session_from_db(self) -> Any:
        """As Django's: the session if it exists and has not expired, else None (and no key)."""
        model = self.model
        connection = connections[router.db_for_read(model)]
        q = connection.ops.quote_name
        sql = (
            f"SELECT {q('session_data')} FROM {q(model._meta.db_table)} "  # noqa: S608
            f"WHERE {q('session_key')} = %s AND {q('expire_date')} > %s"
        )
        now = connection.ops.adapt_datetimefield_value(timezone.now())
        with connection.cursor() as cursor:
            cursor.execute(sql, [self.session_key, now])
            row = cursor.fetchone()
        if row is None:
            self._session_key = None
            return None
        return model(session_key=self.session_key, session_data=row[0])
