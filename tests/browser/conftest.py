from __future__ import annotations

import pytest

from tests.conftest import start_server


@pytest.fixture
def live_url(transactional_db, tmp_path):
    """A fresh gateway process per browser test.

    Browser tests write through the admin, which logs every change against a content
    type. The database is emptied between tests and Django recreates content types with
    new ids, so a long-lived server would still hold the old ids in its cache.
    """
    server = start_server(tmp_path, name="browser")
    yield server.url
    server.stop()
