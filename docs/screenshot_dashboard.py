"""Make docs/dashboard.png from a real run: the dashboard of a SUPERSMM_HOME, in headless Chromium.

    supersmm demo                                   # in an empty folder: trains run `demo`
    python docs/screenshot_dashboard.py [HOME]      # HOME: that folder (default: SUPERSMM_HOME or .)

Needs Debian's chromium and chromium-driver and selenium (`pip install -e '.[test]'`).
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from selenium.webdriver.support.ui import WebDriverWait

from supersmm_tasks.broker import free_loopback_port
from supersmm_tasks.testing import headless_chromium

OUT = Path(__file__).resolve().parent / "dashboard.png"
RUN = "demo"


def main() -> int:
    home = Path(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("SUPERSMM_HOME", ".")).resolve()
    port = free_loopback_port()
    server = subprocess.Popen([sys.executable, "-m", "supersmm_tasks.cli", "dashboard", "--port", str(port)],
                              env={**os.environ, "SUPERSMM_HOME": str(home)})
    try:
        with headless_chromium(window="1400,1300") as driver:
            wait = WebDriverWait(driver, 120, poll_frequency=0.5)
            wait.until(lambda d: _get(d, f"http://127.0.0.1:{port}/#run={RUN}"))
            wait.until(lambda d: d.find_elements("css selector", "#chart circle.point.loss"))
            wait.until(lambda d: d.find_elements("css selector", "#previews img"))
            time.sleep(2)  # the previews' images finish loading
            driver.save_screenshot(str(OUT))
    finally:
        server.terminate()
        server.wait(timeout=20)
    print(OUT)
    return 0


def _get(driver, url: str) -> bool:
    try:
        driver.get(url)
        return True
    except Exception:  # the server is still starting
        return False


if __name__ == "__main__":
    sys.exit(main())
