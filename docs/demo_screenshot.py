"""Screenshot of the demo app in a real headless browser: docs/demo.png (README shows it).

Serves the app (copynat.demo.app) on 127.0.0.1, opens it in headless Chromium through Selenium, types a sentence,
presses Generate, waits for every decoding's reply and saves the page. Needs `pip install "copynat[demo]" selenium`
and a Chromium with its driver (Debian: `apt-get install chromium chromium-driver`; browser downloads are not used).

    python docs/demo_screenshot.py --model copynat-hybrid   # a hybrid model shows greedy, beam and parallel
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
from pathlib import Path

DOCS = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def browser(chromium: str, driver: str, width: int, height: int):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 f"--window-size={width},{height}", "--hide-scrollbars", "--lang=en-US"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="Model folder or Hub id.")
    parser.add_argument("--sentence", default="My name is Henoshasha and I live in Wushi.")
    parser.add_argument("--out", default=str(DOCS / "demo.png"))
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--chromedriver", default="/usr/bin/chromedriver")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args()

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from copynat.demo import app

    demo = app.build_demo(app.load_generator(args.model), title=f"copynat: {Path(args.model).name}")
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, css=app.CSS)
    driver = browser(args.chromium, args.chromedriver, args.width, 1000)
    try:
        driver.get(f"http://127.0.0.1:{port}/")
        wait = WebDriverWait(driver, args.timeout)
        box = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#cn-input textarea"))
        box.clear()
        box.send_keys(args.sentence)
        driver.find_element(By.CSS_SELECTOR, "#cn-generate").click()
        # done when every decoding column shows its latency and the copy-attention table is there
        wait.until(lambda d: len([e for e in d.find_elements(By.CSS_SELECTOR, ".cn-latency") if " ms" in e.text])
                   == len(d.find_elements(By.CSS_SELECTOR, ".cn-latency")) > 0
                   and d.find_elements(By.CSS_SELECTOR, ".cn-attention table"))
        time.sleep(1)  # let the highlight colours settle
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(args.width, min(int(height) + 40, 4000))
        time.sleep(0.5)
        driver.save_screenshot(args.out)
    finally:
        driver.quit()
        demo.close()
    print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
