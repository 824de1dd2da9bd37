"""A real browser opens the Data Docs of a failed validation: the failure must be on the page.

Headless Chromium (Debian's `chromium`, installed by scripts/setup.sh) renders the page GE built; the
DOM it produced is checked and the screenshots stay under `<lake>/_reports/quality/` for people. A
missing browser is a failure, not a skip: setup installs it.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import os
import re
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

import pytest

from recsys_spark import cli
from recsys_spark.lake import Lake

DAY = dt.date(2024, 3, 1)
FAILED = "[critical] every item_id exists in items"
PASSED = "[critical] every user_id exists in users"


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, "headless Chromium is missing: scripts/setup.sh installs Debian's chromium package"
    return found


def render(url: str, screenshot: Path, height: int) -> str:
    """Load `url` in headless Chromium; save a screenshot and return the DOM after load."""
    argv = [
        chromium(),
        "--headless",
        "--no-sandbox",  # running as root in a container
        "--disable-gpu",
        # Data Docs pull Bootstrap & co. from CDNs; fail those fast instead of waiting on the network.
        "--host-resolver-rules=MAP * ~NOTFOUND",
        f"--window-size=1280,{height}",
        f"--screenshot={screenshot}",
        "--dump-dom",
        url,
    ]
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:  # a writable, throw-away profile
        argv.insert(1, f"--user-data-dir={profile}")
        env = {**os.environ, "HOME": profile}
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", header[16:24])


def text_of(dom: str) -> str:
    """What a reader sees: the DOM without scripts, styles and tags, whitespace collapsed."""
    dom = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", dom)).split())


def row_of(dom: str, text: str) -> str:
    """The table row (up to the next row) whose expectation cell holds `text`."""
    rows = [chunk for chunk in dom.split("<tr") if text in chunk]
    assert len(rows) == 1, f"{text!r} found in {len(rows)} rows"
    return rows[0]


@pytest.fixture(scope="module")
def failed_validation(spark, tmp_path_factory):
    lake = Lake(spark, str(tmp_path_factory.mktemp("browser") / "lake"))
    lake.overwrite("items", spark.createDataFrame([("i1",), ("i2",)], "item_id string"))
    lake.overwrite("users", spark.createDataFrame([("u1",)], "user_id string"))
    t = dt.datetime(2024, 3, 1, 9)
    events = spark.createDataFrame(
        [("u1", "i1", "click", t, DAY), ("u1", "i404", "click", t, DAY)],
        "user_id string, item_id string, event string, ts timestamp, dt date",
    )
    lake.append("events", events)
    assert (
        cli.main(["validate", "--lake", lake.root, "--table", "events", "--date", str(DAY)], spark=spark) == 1
    )
    summary = json.loads(Path(lake.path("_reports", "quality", "events", f"{DAY}.json")).read_text())
    return lake, summary


def test_data_docs_show_the_failed_expectation_in_chromium(failed_validation):
    lake, summary = failed_validation
    page = Path(summary["data_docs"])
    assert page.is_file() and page.is_relative_to(lake.path("_reports", "quality"))
    shot = Path(lake.path("_reports", "quality", "events", f"{DAY}-data-docs.png"))
    dom = render(page.as_uri(), shot, height=4000)
    text = text_of(dom)
    assert "Status: Failed" in text and "Unsuccessful Expectations 1" in text
    failed = row_of(dom, FAILED)
    assert "fa-times text-danger" in failed and "fa-check" not in failed  # GE's failed mark
    after = dom[dom.index(FAILED) :][:4000]
    assert "1 unexpected values found" in after and "i404" in after
    assert "fa-check-circle text-success" in row_of(dom, PASSED)  # and a held one is marked held
    assert png_size(shot) == (1280, 4000)
    assert shot.stat().st_size > 20_000  # a rendered page, not a blank image


def test_status_board_shows_the_failure_in_chromium(failed_validation):
    lake, _ = failed_validation
    board = Path(lake.path("_reports", "quality", "index.html"))
    shot = Path(lake.path("_reports", "quality", "status-board.png"))
    dom = render(board.as_uri(), shot, height=800)
    row = row_of(dom, "<td>events</td>")
    assert 'class="failed"' in row and "FAILED" in row
    assert "every item_id exists in items" in row and "i404" in row
    link = row.split('href="', 1)[1].split('"', 1)[0]
    assert not link.startswith("/") and (board.parent / link).is_file()  # relative, so the folder travels
    assert png_size(shot) == (1280, 800)
