"""The avatar zoo: the avatar folders on this machine, the ram-avatar avatars on the Hugging Face
Hub, and each one's model card for display (the app's Zoo tab).

The Hub's avatars are the models whose card says ``library_name: ram-avatar`` (also one of their
tags, which is what ``HfApi.list_models`` filters on); the Hub is the one ``HF_ENDPOINT`` names,
or any ``HfApi``'s. It may be unreachable (no network, ``HF_HUB_OFFLINE=1``, a firewall): the
listing then says why within :data:`HUB_TIMEOUT_S` seconds, and the local avatars stay listed.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import HfApi, constants, try_to_load_from_cache

from ram_avatar.pipelines.folder import MANIFEST  # what makes a folder an avatar (torch-free)
from ram_avatar.training.card import LIBRARY, CardError, load_card

HUB_TIMEOUT_S = 5.0  # how long the Zoo waits for the Hub's answer before it calls the Hub unreachable
HUB_LIMIT = 50  # Hub avatars listed (the most downloaded)
LISTING_THREAD = "ram-avatar-hub-listing"  # the name of the threads that ask the Hub
logger = logging.getLogger(__name__)
# One listing at a time per Hub: huggingface_hub retries a failed request for about 20 s, so the
# listings that the Zoo stops waiting for run on, and a second request joins the one running.
_lock = threading.Lock()
_listings: dict[tuple[str, int], Future] = {}


@dataclass(frozen=True)
class HubAvatar:
    """An avatar repository on the Hub."""

    repo_id: str
    downloads: int | None = None
    likes: int | None = None


@dataclass(frozen=True)
class HubListing:
    """What the Hub at ``endpoint`` lists (most downloaded first), or ``error``: why it could not."""

    endpoint: str
    avatars: tuple[HubAvatar, ...] = ()
    error: str | None = None


def local_avatars(folder: Path, kind: str) -> list[tuple[str, str]]:
    """(name, key) of each avatar folder (one with an ``avatar.json``) in ``folder``, by name:
    the name is the folder's name with ``kind`` ("dancer (example)"), the key its path."""
    if not folder.is_dir():
        return []
    return [(f"{path.name} ({kind})", str(path)) for path in sorted(folder.iterdir()) if (path / MANIFEST).is_file()]


def _list(api: HfApi, limit: int) -> list[HubAvatar]:
    models = api.list_models(filter=LIBRARY, sort="downloads", limit=limit)
    return [HubAvatar(model.id, model.downloads, model.likes) for model in models]


def _run(future: Future, api: HfApi, limit: int) -> None:
    try:
        future.set_result(_list(api, limit))
    except Exception as error:  # noqa: BLE001 - handed to whoever waits (list_hub_avatars)
        future.set_exception(error)


def list_hub_avatars(api: HfApi | None = None, *, timeout: float | None = None, limit: int = HUB_LIMIT) -> HubListing:
    """The ram-avatar avatars on the Hub of ``api`` (default: ``HfApi()``, the Hub of
    ``HF_ENDPOINT``): at most ``limit``, most downloaded first. Never raises: when the Hub is
    off (``HF_HUB_OFFLINE``), fails or does not answer within ``timeout`` seconds (default
    :data:`HUB_TIMEOUT_S`), the listing's ``error`` says so."""
    api = api or HfApi()
    timeout = HUB_TIMEOUT_S if timeout is None else timeout
    if constants.is_offline_mode():
        return HubListing(api.endpoint, error="offline mode is on (HF_HUB_OFFLINE)")
    with _lock:
        future = _listings.get((api.endpoint, limit))
        if future is None or future.done():
            future = _listings[api.endpoint, limit] = Future()
            threading.Thread(target=_run, args=(future, api, limit), name=LISTING_THREAD, daemon=True).start()
    try:
        return HubListing(api.endpoint, tuple(future.result(timeout)))
    except FutureTimeout:
        return HubListing(api.endpoint, error=f"no answer within {timeout:g} s")
    except Exception as error:  # noqa: BLE001 - any failure to list means no Hub now; the local avatars remain
        logger.info("listing the Hub's avatars failed: %s: %s", type(error).__name__, error)
        reason = (str(error).splitlines() or [""])[0][:200]
        return HubListing(api.endpoint, error=f"{type(error).__name__}: {reason}" if reason else type(error).__name__)


def hub_markdown(listing: HubListing, loaded: set[str] | frozenset[str] = frozenset()) -> str:
    """``listing`` for the Zoo tab: the avatars with their downloads and likes (``loaded``: those
    already in the zoo), none found, or the Hub unreachable and why."""
    if listing.error:
        return f"**The Hub is unreachable** ({listing.error}): only the avatars on this server are listed."
    if not listing.avatars:
        return f"*No avatars on the Hub yet: none has `library_name: {LIBRARY}` in its model card.*"
    lines = [f"Avatars on the Hub (`library_name: {LIBRARY}`), most downloaded first; choose one to load it:"]
    for avatar in listing.avatars:
        counts = f"{avatar.downloads or 0} downloads, {avatar.likes or 0} likes"
        done = " (in the zoo)" if avatar.repo_id in loaded else ""
        lines.append(f"- [{avatar.repo_id}]({listing.endpoint}/{avatar.repo_id}): {counts}{done}")
    return "\n".join(lines)


def card_markdown(key: str) -> str:
    """The model card of the avatar ``key`` (a folder, or a Hub id in the local cache), for
    display: its text without its front matter, or a sentence when it has no card or the card's
    front matter is broken (naming the file, never its folder: a server path)."""
    folder = Path(key)
    if not folder.is_dir():
        cached = try_to_load_from_cache(key, "README.md")
        folder = Path(cached).parent if isinstance(cached, str) else folder
    path = folder / "README.md"
    if not path.is_file():
        return "*This avatar has no model card.*"
    try:
        return load_card(path).text
    except CardError as error:
        return f"*This avatar's model card cannot be shown: {error}*"
