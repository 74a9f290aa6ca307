from __future__ import annotations

import functools
import http.server
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from kairos.stages.context import Context, PluginError
from kairos.stages.plugins import downloads

from .helpers import make_step


@pytest.fixture
def web(tmp_path: Path) -> Iterator[str]:
    served = tmp_path / "www"
    served.mkdir()
    (served / "tool.sh").write_text("#!/bin/sh\necho tool\n")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_http_to_path_and_to_directory(ctx: Context, web: str) -> None:
    (ctx.root / "opt/bin").mkdir(parents=True)
    downloads.apply(make_step(downloads=[
        {"url": f"{web}/tool.sh", "path": "/usr/local/bin/tool", "permissions": 0o755,
         "owner": 1, "group": 1},
        {"url": f"{web}/tool.sh", "path": "/opt/bin"}]), ctx)
    tool = ctx.root / "usr/local/bin/tool"
    assert tool.read_text().endswith("echo tool\n")
    assert tool.stat().st_mode & 0o777 == 0o755
    if os.geteuid() == 0:
        assert tool.stat().st_uid == 1
    assert (ctx.root / "opt/bin/tool.sh").stat().st_mode & 0o777 == 0o644


def test_file_url_and_failures(ctx: Context, web: str, tmp_path: Path) -> None:
    src = tmp_path / "local.txt"
    src.write_text("local")
    with pytest.raises(PluginError) as err:
        downloads.apply(make_step(downloads=[
            {"url": f"{web}/missing", "path": "/a"},
            {"url": "ftp://127.0.0.1/x", "path": "/b"},
            {"url": src.as_uri(), "path": "/c"}]), ctx)
    assert "404" in err.value.message and "only http, https and file" in err.value.message
    assert (ctx.root / "c").read_text() == "local"
    assert not (ctx.root / "a").exists()
