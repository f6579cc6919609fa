"""The HTML report at scale: file size, and the time headless Chromium takes to open and draw it.

Section (f) of ``docs/RESULTS.md``. Synthetic results (``tests/synthetic_result.py``: three trees, each
model's parent a random earlier model of its tree; no weights behind them) of 1,000 and 3,000 models are
written with ``mothertree.report.to_html`` and opened from disk ``--repeats`` times in one browser; the
medians are reported: the whole load (navigation until the page says it has drawn) and the drawing alone
(the page's own ``data-render-ms``).

    python benchmarks/report_bench.py            # print the section
    python benchmarks/report_bench.py --write    # and put it into docs/RESULTS.md (``make bench-report``)
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))

from sections import REPORT  # noqa: E402
from selenium import webdriver  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402
from synthetic_result import synthetic_result  # noqa: E402

from mothertree.report import to_html  # noqa: E402

SIZES = (1_000, 3_000)


def browser() -> webdriver.Chrome:
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        sys.exit("error: headless Chromium is missing\n\nhint: apt-get install chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,900"):
        options.add_argument(argument)
    return webdriver.Chrome(service=webdriver.ChromeService(driver_path), options=options)


def open_and_draw(driver: webdriver.Chrome, page: Path) -> tuple[float, float]:
    """(seconds to load and draw, milliseconds the drawing alone took) for one opening of ``page``."""
    driver.get("about:blank")
    started = time.perf_counter()
    driver.get(page.as_uri())
    WebDriverWait(driver, 60).until(
        lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-rendered")
    )
    seconds = time.perf_counter() - started
    return seconds, float(driver.find_element(By.TAG_NAME, "body").get_attribute("data-render-ms") or "nan")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--write", action="store_true", help="put the section into docs/RESULTS.md")
    args = parser.parse_args()
    rows = []
    driver = browser()
    try:
        with tempfile.TemporaryDirectory() as folder:
            for n in SIZES:
                page = Path(folder) / f"report-{n}.html"
                page.write_text(to_html(synthetic_result(n)))
                runs = [open_and_draw(driver, page) for _ in range(args.repeats)]
                load = statistics.median(seconds for seconds, _ in runs)
                draw = statistics.median(ms for _, ms in runs)
                rows.append(
                    f"| {n:,} | {page.stat().st_size / 1000:,.0f} kB | {load:.2f} s | {draw:.0f} ms |"
                )
    finally:
        driver.quit()
    lines = [
        REPORT.start,
        "## (f) The HTML report at scale",
        "",
        f"Measured {dt.date.today().isoformat()} on {platform.machine()}, headless Chromium, medians of "
        f"{args.repeats} openings from disk. Synthetic results (three random trees, no weights). Command: "
        "`make bench-report` (`python benchmarks/report_bench.py --write`).",
        "",
        "| models | file | open and draw | drawing alone |",
        "|---:|---:|---:|---:|",
        *rows,
        REPORT.end,
    ]
    REPORT.publish(lines, args.write)


if __name__ == "__main__":
    main()
