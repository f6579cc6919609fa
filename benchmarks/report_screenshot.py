"""The README's picture of the HTML report: the demo's real page, opened in headless Chromium.

``mothertree demo`` writes the report of its graph (really fine-tuned MobileNetV2s, with the truth); this
opens that page as a reader would, clicks the least confident edge so that its evidence shows, and saves
a screenshot. It also prints how long the page took to draw.

    make report-screenshot   # = mothertree demo -q; python benchmarks/report_screenshot.py
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from mothertree.zoo.demo import default_demo_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--page", type=Path, default=default_demo_dir() / "report.html")
    parser.add_argument("--out", type=Path, default=Path("docs/report.png"))
    parser.add_argument("--size", default="1280,760", help="window width,height in pixels")
    args = parser.parse_args(argv)
    if not args.page.is_file():
        print(f"error: no report at `{args.page}`\n\nhint: run `mothertree demo` first", file=sys.stderr)
        return 1
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        hint = "apt-get install chromium chromium-driver"
        print(f"error: headless Chromium is missing\n\nhint: {hint}", file=sys.stderr)
        return 1
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        f"--window-size={args.size}",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=webdriver.ChromeService(driver_path), options=options)
    try:
        started = time.perf_counter()
        driver.get(args.page.resolve().as_uri())
        body = driver.find_element(By.TAG_NAME, "body")
        WebDriverWait(driver, 30).until(lambda _: body.get_attribute("data-rendered"))
        seconds = time.perf_counter() - started
        data = driver.find_element(By.ID, "mothertree-data").get_attribute("textContent")
        edges = json.loads(data)["edges"]
        weakest = min(edges, key=lambda e: e["confidence"])
        driver.find_element(By.CSS_SELECTOR, f'.edge[data-child="{weakest["child"]}"] .hit').click()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(args.out))
    finally:
        driver.quit()
    print(f"{args.out}: {args.page} drawn in {seconds:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
