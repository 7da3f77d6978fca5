"""The zoo: local avatars and the Hub's ram-avatar avatars (found by their cards' library tag),
tested against a local stand-in that answers like the Hub's API; an offline, refusing or silent
Hub is called unreachable, in a bounded time, and the local avatars stay listed; model cards are
shown without their front matter, or with a clear sentence when it is broken."""

from __future__ import annotations

import importlib
import json
import shutil
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import gradio as gr
import pytest
from huggingface_hub import HfApi, constants

from ram_avatar import zoo
from ram_avatar.zoo import HubAvatar, HubListing, card_markdown, hub_markdown, list_hub_avatars

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "avatars" / "dancer-rt256"
# Two models as the Hub's /api/models lists them (its default fields).
MODELS = [
    {
        "_id": "1",
        "id": "alice/dancer",
        "modelId": "alice/dancer",
        "likes": 3,
        "downloads": 120,
        "private": False,
        "tags": ["ram-avatar", "avatar", "license:other"],
        "library_name": "ram-avatar",
        "createdAt": "2025-01-02T03:04:05.000Z",
    },
    {
        "_id": "2",
        "id": "bob/runner",
        "modelId": "bob/runner",
        "likes": 0,
        "downloads": 7,
        "private": False,
        "tags": ["ram-avatar", "avatar"],
        "library_name": "ram-avatar",
        "createdAt": "2025-02-03T04:05:06.000Z",
    },
]


class StandInHub:
    """A server on 127.0.0.1 that answers ``GET /api/models`` as the Hub does (a JSON list of
    models) and anything else with 404; ``queries`` holds each /api/models request's query."""

    def __init__(self, models: list[dict]):
        self.queries: list[dict[str, list[str]]] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                url = urlsplit(self.path)
                if url.path != "/api/models":
                    self.send_error(404)
                    return
                hub.queries.append(parse_qs(url.query))
                body = json.dumps(models).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:  # quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module", autouse=True)
def no_listing_left_running():
    """After these tests, wait for the listings they stopped waiting for (huggingface_hub retries
    a refused connection for about 20 s): their retries would log after pytest closed its output."""
    yield
    for thread in threading.enumerate():
        if thread.name == zoo.LISTING_THREAD:
            thread.join(timeout=120)


@pytest.fixture
def hub():
    server = StandInHub(MODELS)
    yield server
    server.close()


@pytest.fixture
def refusing() -> str:
    """The endpoint of a port nothing listens on: every connection is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def silent():
    """The endpoint of a server that accepts connections and never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture
def app(tmp_path, monkeypatch):
    """The app module with a zoo of one local avatar ("me") beside the bundled example."""
    monkeypatch.syspath_prepend(str(ROOT))
    module = importlib.import_module("app")
    me = tmp_path / "zoo" / "me"
    me.mkdir(parents=True)
    shutil.copyfile(EXAMPLE / "avatar.json", me / "avatar.json")
    monkeypatch.setattr(module, "ZOO", tmp_path / "zoo")
    monkeypatch.setattr(module, "EXAMPLE_AVATARS", EXAMPLE.parent)
    return module


def test_hub_avatars_are_listed_by_the_library_tag(hub):
    listing = list_hub_avatars(HfApi(endpoint=hub.url), timeout=30)
    assert listing.error is None and listing.endpoint == hub.url
    assert listing.avatars == (HubAvatar("alice/dancer", 120, 3), HubAvatar("bob/runner", 7, 0))
    [query] = hub.queries
    assert query == {"filter": ["ram-avatar"], "sort": ["downloads"], "limit": [str(zoo.HUB_LIMIT)]}
    text = hub_markdown(listing, {"bob/runner"})
    assert f"- [alice/dancer]({hub.url}/alice/dancer): 120 downloads, 3 likes\n" in text
    assert text.endswith("- [bob/runner](" + hub.url + "/bob/runner): 7 downloads, 0 likes (in the zoo)")


def test_an_empty_hub_says_none_is_there():
    assert "No avatars on the Hub yet" in hub_markdown(HubListing("https://hub.example"))


def test_offline_mode_asks_the_hub_nothing(hub, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    listing = list_hub_avatars(HfApi(endpoint=hub.url))
    assert listing.avatars == () and "HF_HUB_OFFLINE" in listing.error and hub.queries == []
    assert hub_markdown(listing).startswith("**The Hub is unreachable** (offline mode is on (HF_HUB_OFFLINE))")


@pytest.mark.parametrize("endpoint", ["refusing", "silent"])
def test_an_unreachable_hub_is_told_within_the_timeout(endpoint, request):
    """huggingface_hub retries a refused connection for ~20 s and waits on a silent server for
    ever: the listing stops waiting after ``timeout`` and says so."""
    listing = list_hub_avatars(HfApi(endpoint=request.getfixturevalue(endpoint)), timeout=0.5)
    assert listing.avatars == () and listing.error == "no answer within 0.5 s"
    assert "**The Hub is unreachable** (no answer within 0.5 s)" in hub_markdown(listing)


def test_a_failing_hub_says_why(hub):
    """A Hub that answers with an error (here: no such API, 404) is unreachable too, with its reason."""
    listing = list_hub_avatars(HfApi(endpoint=hub.url + "/nothing-here"), timeout=30)
    assert listing.avatars == () and listing.error.startswith("HfHubHTTPError: ") and "404 Not Found" in listing.error


def test_the_app_zoo_lists_local_and_hub_avatars(app, hub, monkeypatch):
    monkeypatch.setattr(constants, "ENDPOINT", hub.url)  # as HF_ENDPOINT sets it at import
    local, listing, pick = app.browse_hub()
    assert "- **dancer-rt256 (example)** — `examples/avatars/dancer-rt256`" in local and "- **me (local)**" in local
    assert f"[alice/dancer]({hub.url}/alice/dancer)" in listing and "[bob/runner]" in listing
    assert pick["choices"] == ["alice/dancer", "bob/runner"] and pick["value"] is None


@pytest.mark.parametrize("how", ["offline", "refusing"])
def test_the_app_zoo_without_the_hub_says_so_and_lists_the_local_avatars(app, how, refusing, monkeypatch):
    if how == "offline":
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "ENDPOINT", refusing)
    monkeypatch.setattr(zoo, "HUB_TIMEOUT_S", 0.5)
    local, listing, pick = app.browse_hub()
    assert "**dancer-rt256 (example)**" in local and "**me (local)**" in local
    assert listing.startswith("**The Hub is unreachable**") and "only the avatars on this server are listed" in listing
    assert pick["choices"] == []


def test_choosing_a_hub_avatar_loads_it(app):
    """The Zoo's Hub choice is wired to load_from_hub with the id chosen; browse_hub fills it."""
    demo = app.build_app()
    pick = next(b for b in demo.blocks.values() if isinstance(b, gr.Dropdown) and b.label.startswith("Hub avatar"))
    (loads,) = [f for f in demo.fns.values() if (pick._id, "input") in f.targets]
    assert loads.fn is app.load_from_hub and loads.inputs == [pick]
    fills = [f for f in demo.fns.values() if f.fn is app.browse_hub]
    assert fills and all(f.outputs[-1] is pick for f in fills)
    assert {f.api_name for f in fills} >= {"browse_hub"}


def test_cards_are_shown_without_front_matter_or_with_why_not(app, tmp_path):
    me = app.ZOO / "me"
    (me / "README.md").write_text("---\nlibrary_name: ram-avatar\nlicense: other\n---\n\n# me\n\nThe card.\n")
    assert app.card("me (local)") == "\n# me\n\nThe card.\n"
    # Unclosed: the old reader showed the YAML as text, or cut the card at its first horizontal rule.
    unclosed = "---\nlibrary_name: ram-avatar\n\n# me\n\nThe card.\n"
    for text in (unclosed, "---\nlicense: other\n\n# me\n\nA.\n\n---\n\nB.\n"):
        (me / "README.md").write_text(text)
        shown = app.card("me (local)")
        assert shown.startswith("*This avatar's model card cannot be shown: README.md") and "regenerate" in shown
        assert str(tmp_path) not in shown
    assert card_markdown(str(EXAMPLE)).startswith("\n# dancer-rt256\n")
