"""The page of `fastconv serve` in a real browser: headless Chromium driven by Selenium.

Draws on the canvas with real pointer input, checks that the answer appears and equals
`fastconv predict` on the very pixels the page sent, that drawing asks again without flooding,
that Invert and an upload work, and takes a screenshot (kept where $FASTCONV_SERVE_SCREENSHOT
says, if set). Skips, saying why, without Selenium, Chromium or chromedriver (.ci/run installs
Debian's chromium and chromium-driver when it can).
"""

import base64
import contextlib
import io
import os
import shutil
import time

import numpy as np
import pytest

from fastconv.apps import serve_model

from test_serve import assert_equals_predict, png_bytes, runs, serving  # noqa: F401  (runs is a fixture)

Image = pytest.importorskip("PIL.Image", reason="fastconv serve decodes images with Pillow")
webdriver = pytest.importorskip("selenium.webdriver", reason="the browser test needs Selenium (pip install selenium)")
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

BROWSER = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
DRIVER = shutil.which("chromedriver")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        BROWSER is None or DRIVER is None,
        reason="no headless browser: install Chromium and its driver "
        "(Debian: apt-get install chromium chromium-driver)",
    ),
]
VIEWPORT = (1180, 720)


@contextlib.contextmanager
def browser_on(run_dir):
    """A headless Chromium on the page of a server for the model in ``run_dir``, once it has loaded."""
    options = webdriver.ChromeOptions()
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--force-device-scale-factor=1",
        f"--window-size={VIEWPORT[0]},{VIEWPORT[1]}",
    ):
        options.add_argument(arg)
    options.binary_location = BROWSER
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    with serving(serve_model.ModelService(run_dir)) as url:
        driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=DRIVER))
        try:
            driver.execute_cdp_cmd(
                "Emulation.setDeviceMetricsOverride",
                {"width": VIEWPORT[0], "height": VIEWPORT[1], "deviceScaleFactor": 1, "mobile": False},
            )
            driver.get(url + "/")
            wait(driver, "document.getElementById('badges').children.length > 0")
            yield driver
        finally:
            driver.quit()


@pytest.fixture(scope="module")
def page(runs):  # noqa: F811  (the fixture imported above)
    with browser_on(runs["conv"]) as driver:
        yield driver


def wait(driver, condition, timeout=30):
    """Wait until the JavaScript expression ``condition`` is true."""
    deadline = time.monotonic() + timeout
    while not driver.execute_script(f"return !!({condition})"):
        assert time.monotonic() < deadline, f"timed out waiting for {condition}"
        time.sleep(0.05)


def settle(driver, answered_before):
    """Wait until a new answer came and nothing is pending; the probe's last {image, answer}."""
    wait(driver, f"window.fastconv.answered > {answered_before} && window.fastconv.idle()")
    assert driver.execute_script("return window.fastconv.errors") == 0
    return driver.execute_script("return window.fastconv.last")


def answered(driver):
    return driver.execute_script("return window.fastconv.answered")


def sent_pixels(last, path):
    """The PNG the page sent, written to ``path``; its pixels (H, W, channels)."""
    data = base64.b64decode(last["image"].split(",", 1)[1])
    path.write_bytes(data)
    return np.asarray(Image.open(io.BytesIO(data)))


def shown_pixels(driver):
    """The pixels of the page's "what the model sees" canvas (H, W, 4)."""
    height, width, flat = driver.execute_script("""
        const c = document.getElementById('seen');
        return [c.height, c.width, Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data)];""")
    return np.array(flat, dtype=np.uint8).reshape(height, width, 4)


def draw(driver, points, step_ms=0):
    """One stroke of real pointer input through ``points`` ((x, y) in 0..1 of the canvas)."""
    pad = driver.find_element(By.ID, "pad")
    width, height = pad.size["width"], pad.size["height"]
    at = [(round((x - 0.5) * width), round((y - 0.5) * height)) for x, y in points]
    actions = ActionChains(driver, duration=step_ms)
    actions.move_to_element_with_offset(pad, *at[0]).click_and_hold()
    for offset in at[1:]:
        actions.move_to_element_with_offset(pad, *offset)
    actions.release().perform()


def test_drawing_gives_fastconv_predicts_answer(page, runs, capsys, tmp_path):  # noqa: F811
    before = answered(page)
    draw(page, [(0.5, 0.15), (0.48, 0.5), (0.5, 0.85)])
    last = settle(page, before)
    pixels = sent_pixels(last, tmp_path / "drawn.png")
    # what was sent is what the page shows, grey, and holds the stroke
    shown = shown_pixels(page)
    assert np.array_equal(pixels[..., :3], shown[..., :3]) and np.all(pixels[..., 3] == 255)
    assert np.array_equal(pixels[..., 0], pixels[..., 1]) and np.array_equal(pixels[..., 0], pixels[..., 2])
    assert pixels[14, 13:16, 0].max() > 200 and pixels[14, :5, 0].max() == 0
    assert_equals_predict(capsys, runs["conv"], tmp_path / "drawn.png", last["answer"])
    # and the page shows that answer: the top class, five bars, the first layer's six maps
    top = last["answer"]["predictions"]
    assert page.find_element(By.ID, "answer-class").text == top[0]["class"]
    names = [e.text for e in page.find_elements(By.CSS_SELECTOR, "#bars .bar .name")]
    assert names == [p["class"] for p in top[:5]]
    values = [e.text for e in page.find_elements(By.CSS_SELECTOR, "#bars .bar .value")]
    assert values == [f"{100 * p['probability']:.1f}%" for p in top[:5]]
    assert len(page.find_elements(By.CSS_SELECTOR, "#maps img")) == 6


def test_drawing_asks_again_without_flooding(page, runs, capsys, tmp_path):  # noqa: F811
    sent_before, before = page.execute_script("return window.fastconv.sent"), answered(page)
    start = time.monotonic()
    moves = 120
    draw(page, [(0.2 + 0.6 * i / moves, 0.3 + 0.4 * (i % 2)) for i in range(moves + 1)], step_ms=8)
    seconds = time.monotonic() - start
    last = settle(page, before)
    sent = page.execute_script("return window.fastconv.sent") - sent_before
    assert 2 <= sent <= seconds / 0.12 + 2, (sent, seconds)  # asked again while drawing, not per move
    assert page.execute_script("return window.fastconv.answered") == page.execute_script("return window.fastconv.sent")
    # the last answer is for the finished drawing
    assert np.array_equal(sent_pixels(last, tmp_path / "zigzag.png")[..., :3], shown_pixels(page)[..., :3])
    assert_equals_predict(capsys, runs["conv"], tmp_path / "zigzag.png", last["answer"])


def test_invert_and_clear(page, tmp_path):
    before = answered(page)
    draw(page, [(0.3, 0.5), (0.7, 0.5)])
    settle(page, before)
    before = answered(page)
    page.find_element(By.ID, "invert").click()
    inverted = sent_pixels(settle(page, before), tmp_path / "inverted.png").astype(int)
    before = answered(page)
    page.find_element(By.ID, "invert").click()
    back = sent_pixels(settle(page, before), tmp_path / "back.png").astype(int)
    assert np.max(np.abs(inverted[..., :3] + back[..., :3] - 255)) <= 2  # downscaling and grey each round
    assert back[..., 0].max() > 200 and back[..., 0].min() == 0
    before = answered(page)
    page.find_element(By.ID, "clear").click()
    assert np.all(sent_pixels(settle(page, before), tmp_path / "clear.png")[..., :3] == 0)


def test_upload(page, runs, capsys, tmp_path):  # noqa: F811
    x = runs["images"][9]
    big = np.repeat(np.repeat(x, 4, axis=0), 4, axis=1)
    upload = tmp_path / "upload.png"
    upload.write_bytes(png_bytes(np.stack([big, big, big], axis=-1)))  # 112x112 colour
    before = answered(page)
    page.find_element(By.ID, "file").send_keys(str(upload))
    last = settle(page, before)
    pixels = sent_pixels(last, tmp_path / "sent.png")
    assert np.mean(np.abs(pixels[..., 0].astype(int) - x)) < 8  # 112 -> 28 again, by the browser's filter
    assert_equals_predict(capsys, runs["conv"], tmp_path / "sent.png", last["answer"])


def test_screenshot_and_no_page_errors(page, tmp_path):
    before = answered(page)
    page.find_element(By.ID, "clear").click()
    draw(page, [(0.3, 0.2), (0.7, 0.2), (0.62, 0.8), (0.38, 0.8), (0.3, 0.2)])
    settle(page, before)
    shot = tmp_path / "page.png"
    assert page.save_screenshot(str(shot))
    assert Image.open(shot).size == VIEWPORT
    if os.environ.get("FASTCONV_SERVE_SCREENSHOT"):
        shutil.copy(shot, os.environ["FASTCONV_SERVE_SCREENSHOT"])
    severe = [entry for entry in page.get_log("browser") if entry["level"] == "SEVERE"]
    assert not severe, severe


def test_colour_model_draws_in_colour(runs, capsys, tmp_path):  # noqa: F811
    with browser_on(runs["colour"]) as driver:
        assert driver.find_element(By.ID, "seen-size").text == "32×32 colour"
        assert driver.find_element(By.ID, "ink-label").is_displayed()
        driver.execute_script("""const ink = document.getElementById('ink');
            ink.value = '#ff3000'; ink.dispatchEvent(new Event('input'));""")
        draw(driver, [(0.2, 0.5), (0.8, 0.5)])
        last = settle(driver, 0)
        pixels = sent_pixels(last, tmp_path / "red.png")
        assert pixels.shape == (32, 32, 4) and np.array_equal(pixels[..., :3], shown_pixels(driver)[..., :3])
        r, g, b = pixels[:, 16, :3].astype(int)[np.argmax(pixels[:, 16, 0])]  # the stroke's middle: the ink
        assert r >= 240 and abs(g / r - 0x30 / 0xFF) < 0.03 and b == 0 and tuple(pixels[2, 2, :3]) == (0, 0, 0)
        assert_equals_predict(capsys, runs["colour"], tmp_path / "red.png", last["answer"])
        assert len(driver.find_elements(By.CSS_SELECTOR, "#maps img")) == 5
