"""Fetch a remote config (config_url, `config validate URL`): http, https or file URLs.

Kairos retries 3 times with a 1 s delay; the delay and the sleep are parameters so tests
stay fast. A response over 1 MiB is refused like a local file over the size limit.
"""

from __future__ import annotations

import http.client
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from urllib.parse import urlsplit

from kairos.errors import BadInput, KairosError

log = logging.getLogger("kairos.config")

SCHEMES = ("http", "https", "file")
MAX_REMOTE_SIZE = 1 << 20
TRIES = 3
RETRY_DELAY = 1.0
TIMEOUT = 15.0


class FetchError(KairosError):
    """A URL could not be fetched after all tries."""


def is_url(text: str) -> bool:
    return urlsplit(text).scheme in SCHEMES and "://" in text


def fetch_text(url: str, *, tries: int = TRIES, delay: float = RETRY_DELAY,
               timeout: float = TIMEOUT, sleep: Callable[[float], None] = time.sleep) -> str:
    """The text at `url`; raises FetchError (after `tries` attempts) or BadInput."""
    if not is_url(url):
        raise BadInput(f"cannot fetch '{url}': not an http, https or file URL",
                       "write the URL as http://…, https://… or file:///path")
    reason = "no attempt made"
    for attempt in range(1, max(tries, 1) + 1):
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                status = getattr(resp, "status", None)
                if status is not None and status != 200:
                    raise FetchError(f"unexpected HTTP status {status}")
                body: bytes = resp.read(MAX_REMOTE_SIZE + 1)
        except urllib.error.HTTPError as exc:
            reason = f"HTTP {exc.code} {exc.reason}"
        except urllib.error.URLError as exc:
            reason = str(exc.reason)
        except (OSError, http.client.HTTPException, ValueError, FetchError) as exc:
            reason = str(exc) or type(exc).__name__
        else:
            if len(body) > MAX_REMOTE_SIZE:
                raise FetchError(f"{url} is larger than {MAX_REMOTE_SIZE // 2**20} MiB",
                                 "split the config or serve a smaller file")
            try:
                return body.decode("utf-8-sig")
            except UnicodeDecodeError:
                raise FetchError(f"{url} is not UTF-8 text", "serve the config as UTF-8") from None
        log.debug("fetching %s failed (try %d of %d): %s", url, attempt, tries, reason)
        if attempt < tries:
            sleep(delay)
    raise FetchError(f"cannot fetch {url}: {reason}",
                     "check the URL, the server and the network")
