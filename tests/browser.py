"""Open a page in headless Chromium through the DevTools protocol, with a cookie set first.

Ray 2.60's dashboard asks for the cluster's auth token; the browser sends it as the
cookie `ray-authentication-token`, which Chromium's command line cannot set. This
starts Chromium with a DevTools port, sets the cookie, loads the page, waits for a text
to appear, and returns the page's visible text and a PNG screenshot. It uses aiohttp
(installed with ray[default]) as the websocket client.

  python tests/browser.py URL OUT.png [--wait-for TEXT] [--cookie NAME=VALUE]
"""

import argparse
import asyncio
import base64
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _session(ws_url: str, steps):
    import aiohttp

    async with aiohttp.ClientSession() as http, http.ws_connect(ws_url, max_msg_size=0) as ws:
        counter = 0

        async def call(method: str, **params):
            nonlocal counter
            counter += 1
            await ws.send_json({"id": counter, "method": method, "params": params})
            while True:
                message = json.loads((await ws.receive()).data)
                if message.get("id") == counter:
                    if "error" in message:
                        raise RuntimeError(f"{method}: {message['error']}")
                    return message.get("result", {})

        return await steps(call)


def open_page(
    url: str, cookies: dict, wait_for: str | None = None, timeout: float = 40.0, size=(1400, 900)
) -> tuple[str, bytes]:
    """(visible text, PNG bytes) of `url` after `wait_for` shows up in the text (or the timeout)."""
    port, profile = _free_port(), tempfile.mkdtemp(prefix="chromium-")
    proc = subprocess.Popen(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--remote-debugging-port={port}",
            f"--user-data-dir={profile}",
            f"--window-size={size[0]},{size[1]}",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                pages = json.load(
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/json", timeout=2)
                )
                ws_url = next(p["webSocketDebuggerUrl"] for p in pages if p.get("type") == "page")
                break
            except (OSError, StopIteration, ValueError):
                if time.monotonic() > deadline:
                    raise RuntimeError("chromium did not open its DevTools port") from None
                time.sleep(0.3)

        async def steps(call):
            await call("Network.enable")
            for name, value in cookies.items():
                await call("Network.setCookie", name=name, value=value, url=url.split("#")[0])
            await call("Page.enable")
            await call("Page.navigate", url=url)
            text, end = "", time.monotonic() + timeout
            while time.monotonic() < end:
                await asyncio.sleep(1.0)
                result = await call(
                    "Runtime.evaluate", expression="document.body ? document.body.innerText : ''"
                )
                text = result.get("result", {}).get("value", "") or ""
                if wait_for is None or wait_for in text:
                    break
            await asyncio.sleep(1.0)  # let the table finish drawing
            shot = await call("Page.captureScreenshot", format="png")
            return text, base64.b64decode(shot["data"])

        return asyncio.run(_session(ws_url, steps))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(profile, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("out")
    parser.add_argument("--wait-for", default=None)
    parser.add_argument("--cookie", action="append", default=[], help="NAME=VALUE")
    args = parser.parse_args()
    cookies = dict(c.split("=", 1) for c in args.cookie)
    text, png = open_page(args.url, cookies, args.wait_for)
    with open(args.out, "wb") as f:
        f.write(png)
    print(text[:2000])
    return 0


if __name__ == "__main__":
    sys.exit(main())
