"""The built documentation site in a real browser: headless Chromium (Debian's chromium + chromium-driver,
driven by selenium) opens the home page, the options reference and a results page that ``fedfit sweep
--docs`` wrote, served from localhost: they render, every image loads, nothing is fetched from another
host, and the site's search finds ``dirichlet_alpha``. Skipped where Chromium, its driver, selenium or
mkdocs is missing. ``FEDFIT_DOCS_SCREENSHOTS=DIR`` keeps a screenshot of each page there."""
import functools
import http.server
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="needs Debian's chromium and chromium-driver")]

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1280,1000"]


def build_site(tmp: Path) -> Path:
    """The repository's docs plus one results page written by ``fedfit sweep --docs`` (fake runs), built
    with ``mkdocs build --strict`` into TMP/site."""
    yaml = pytest.importorskip("yaml")
    pytest.importorskip("mkdocs")
    import fedfit
    from tests.test_docs import TINY, _fake_sweep

    shutil.copytree(ROOT / "docs", tmp / "docs")
    f = _fake_sweep(tmp, TINY)
    fedfit.sweep(f, plot_only=True, docs=tmp / "docs", progress=lambda s: None)
    cfg = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    cfg.update(docs_dir=str(tmp / "docs"), site_dir=str(tmp / "site"))
    for plugin in cfg["plugins"]:
        if isinstance(plugin, dict) and "mkdocstrings" in plugin:
            plugin["mkdocstrings"]["handlers"]["python"]["paths"] = [str(ROOT)]
    (tmp / "mkdocs.yml").write_text(yaml.safe_dump(cfg))
    p = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-f", str(tmp / "mkdocs.yml")],
                       capture_output=True, text=True, timeout=300, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert p.returncode == 0, p.stderr[-3000:]
    return tmp / "site"


@pytest.fixture
def served(tmp_path):
    """The built site on http://127.0.0.1:PORT (a thread of this process, stopped after the test)."""
    site = build_site(tmp_path)
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def browser(tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS + [f"--user-data-dir={tmp_path / 'chromium-profile'}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def open_page(driver, url: str, shot: str) -> dict:
    """Load ``url``, wait for its images; return what it shows (title, h1, images, hosts it fetched from)."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    WebDriverWait(driver, 30).until(lambda d: d.execute_script(
        "return document.readyState === 'complete' && [...document.images].every(i => i.complete)"))
    shown = driver.execute_script("""
        const h1 = document.querySelector('article h1');
        return {title: document.title, h1: h1 ? h1.firstChild.textContent : null,
                images: [...document.querySelectorAll('article img')].map(i => [i.getAttribute('src'), i.naturalWidth]),
                hosts: [...new Set(performance.getEntriesByType('resource').map(e => new URL(e.name).host))],
                rows: document.querySelectorAll('article table tr').length}""")
    if os.environ.get("FEDFIT_DOCS_SCREENSHOTS"):
        out = Path(os.environ["FEDFIT_DOCS_SCREENSHOTS"])
        out.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(out / shot))
    return shown


def test_the_built_site_renders_its_pages_with_their_figures_and_finds_an_option(served, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    host = served.split("//")[1]
    home = open_page(browser, served + "/", "home.png")
    assert home["h1"] == "fedfit" and len(home["images"]) >= 1
    options = open_page(browser, served + "/reference/options/", "options.png")
    assert options["h1"] == "Options reference" and options["rows"] > 80
    assert browser.find_element(By.ID, "dirichlet_alpha")  # one anchor per option: options/#NAME
    results = open_page(browser, served + "/results/tiny/", "results.png")
    assert results["h1"] == "tiny" and len(results["images"]) == 2
    for page in (home, options, results):
        assert all(width > 0 for _, width in page["images"]), page["images"]  # every image loaded
        assert set(page["hosts"]) <= {host}, page["hosts"]  # nothing fetched from another host (fonts, CDNs)

    browser.get(served + "/")
    box = browser.find_element(By.CSS_SELECTOR, "input[data-md-component='search-query']")
    box.click()
    box.send_keys("dirichlet_alpha")
    hits = WebDriverWait(browser, 30).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, ".md-search-result__item a"))
    targets = [h.get_attribute("href") for h in hits]
    assert any("/reference/options/" in t for t in targets), targets
    if os.environ.get("FEDFIT_DOCS_SCREENSHOTS"):
        browser.save_screenshot(str(Path(os.environ["FEDFIT_DOCS_SCREENSHOTS"]) / "search.png"))
