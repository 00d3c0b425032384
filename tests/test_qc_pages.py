"""QC pages: content of the visit and group pages (unit), and the pages of the end-to-end run as a
person sees them, in headless Chromium (no console errors, every image loads, links resolve).

The browser is Debian's ``chromium`` driven over the DevTools protocol through a pipe
(``--remote-debugging-pipe``: NUL-separated JSON on file descriptors 3 and 4), so no Python
package and no browser download is needed. One screenshot per page type is saved under the
test's tmp dir (printed; CI keeps it as an artefact).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from neurosmk import qcpages
from neurosmk.qc_metrics import METRICS

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


# ---- a minimal DevTools-protocol client over a pipe ---------------------------------------------
class Browser:
    def __init__(self, profile_dir: str):
        r_in, self._w = os.pipe()  # we write, chromium reads fd 3
        self._r, w_out = os.pipe()  # chromium writes fd 4, we read

        def fds():
            a, b = os.dup(r_in), os.dup(w_out)
            os.dup2(a, 3)
            os.dup2(b, 4)
            os.set_inheritable(3, True)
            os.set_inheritable(4, True)

        args = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
                f"--user-data-dir={profile_dir}", "--remote-debugging-pipe", "about:blank"]
        self.proc = subprocess.Popen(args, preexec_fn=fds, close_fds=False, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        os.close(r_in)
        os.close(w_out)
        self._buf = b""
        self._id = 0
        self.events: list[dict] = []
        tid = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": tid, "flatten": True})["sessionId"]
        for method in ("Page.enable", "Runtime.enable", "Log.enable"):
            self.call(method, session=True)

    def _send(self, method, params=None, session=False) -> int:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = self.session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        return self._id

    def _until(self, pred, timeout=60.0) -> dict:
        end = time.time() + timeout
        while True:
            while b"\0" in self._buf:
                raw, self._buf = self._buf.split(b"\0", 1)
                msg = json.loads(raw)
                if "id" not in msg:
                    self.events.append(msg)
                if pred(msg):
                    return msg
            if time.time() > end:
                raise TimeoutError("chromium did not answer")
            chunk = os.read(self._r, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self._buf += chunk

    def call(self, method, params=None, session=False, timeout=60.0) -> dict:
        i = self._send(method, params, session)
        msg = self._until(lambda m: m.get("id") == i, timeout)
        if "error" in msg:
            raise RuntimeError(f"{method}: {msg['error']}")
        return msg.get("result", {})

    def open(self, url: str) -> None:
        self.events.clear()
        self.call("Emulation.setDeviceMetricsOverride",
                  {"width": 1400, "height": 1000, "deviceScaleFactor": 1, "mobile": False}, session=True)
        self._send("Page.navigate", {"url": url}, session=True)
        self._until(lambda m: m.get("method") == "Page.loadEventFired")

    def js(self, expression: str):
        res = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True}, session=True)
        if "exceptionDetails" in res:
            raise RuntimeError(res["exceptionDetails"])
        return res["result"].get("value")

    def errors(self) -> list[str]:
        out = []
        for e in self.events:
            m, p = e.get("method"), e.get("params", {})
            if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append("console: " + " ".join(str(a.get("value")) for a in p.get("args", [])))
            elif m == "Runtime.exceptionThrown":
                out.append("exception: " + json.dumps(p.get("exceptionDetails", {}))[:300])
            elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                out.append("log: " + p["entry"].get("text", "") + " " + p["entry"].get("url", ""))
        return out

    def screenshot(self, path: Path) -> None:
        h = self.js("document.documentElement.scrollHeight")
        self.call("Emulation.setDeviceMetricsOverride",
                  {"width": 1400, "height": min(int(h), 6000), "deviceScaleFactor": 1, "mobile": False},
                  session=True)
        data = self.call("Page.captureScreenshot", {"format": "png"}, session=True)["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        try:
            self._send("Browser.close")
            self.proc.wait(15)
        except Exception:  # noqa: BLE001
            self.proc.kill()
            self.proc.wait()
        finally:
            os.close(self._w)
            os.close(self._r)


@pytest.fixture
def browser(tmp_path):
    if not os.path.exists(CHROMIUM):
        pytest.skip("chromium is not installed (apt-get install chromium)")
    profile = tempfile.mkdtemp(prefix="qc-chromium-", dir=tmp_path)
    b = Browser(profile)
    yield b
    b.close()


PAGE_STATE = """JSON.stringify({
  title: document.title,
  images: [...document.images].map(i => ({src: i.src, w: i.naturalWidth, h: i.naturalHeight,
                                         complete: i.complete})),
  links: [...document.querySelectorAll('a[href]')].map(a => new URL(a.getAttribute('href'), document.baseURI).href),
  text: document.body.innerText})"""


def check_page(browser, page: Path, shot: Path | None = None) -> dict:
    """Open a page; assert no console errors, every image decoded, every local link resolves."""
    assert page.is_file(), page
    browser.open(page.resolve().as_uri())
    state = json.loads(browser.js(PAGE_STATE))
    assert browser.errors() == [], (page, browser.errors())
    for img in state["images"]:
        assert img["complete"] and img["w"] > 0 and img["h"] > 0, (page, img)
    for href in state["links"]:
        u = urlparse(href)
        assert u.scheme == "file", (page, href)  # nothing online
        assert os.path.exists(unquote(u.path)), (page, href)
        if u.fragment:  # in-page anchors exist
            if unquote(u.path) == str(page.resolve()):
                assert browser.js(f"!!document.getElementById({json.dumps(u.fragment)})"), (page, href)
    if shot:
        browser.screenshot(shot)
        print(f"screenshot: {shot}")
    return state


# ---- the end-to-end run, in the browser ----------------------------------------------------------
def test_pages_of_the_e2e_run_in_chromium(reduced_run, browser, tmp_path):
    out = Path(reduced_run["out"])
    group = out / "group" / "qc.html"
    g = check_page(browser, group, tmp_path / "group_page.png")
    pages = sorted(out.glob("sub-*.html"))
    assert [p.name for p in pages] == ["sub-01.html", "sub-02.html"]  # sub-01 T1w only, sub-02 DWI only
    # the index links every visit page, and each dot links one too
    linked = {Path(unquote(urlparse(h).path)).name for h in g["links"]}
    assert {"sub-01.html", "sub-02.html"} <= linked
    assert "2 visits" in g["text"] and "Brain mask volume" in g["text"] and "Mean FA in WM" in g["text"]
    # with 1 value per measure the robust z is undefined: no outliers, n/a is not a number
    assert "Outliers (0)" in g["text"]

    s1 = check_page(browser, out / "sub-01.html", tmp_path / "visit_page.png")
    names1 = sorted(Path(urlparse(i["src"]).path).name for i in s1["images"])
    assert names1 == ["sub-01_desc-brainmask_T1w.png", "sub-01_desc-dseg_T1w.png", "sub-01_desc-reg_T1w.png"]
    assert all(i["w"] >= 2000 for i in s1["images"])  # whole-brain mosaics at 150 dpi
    for text in ("Brain mask volume", "GM volume", "Template similarity after registration", "T1w SNR (WM)",
                 "anat.skullstrip", "brainextractor", "antspyx", "Status"):
        assert text in s1["text"], text
    # the group page link on the visit page goes back to the group page
    assert any(unquote(urlparse(h).path) == str(group.resolve()) for h in s1["links"])

    s2 = check_page(browser, out / "sub-02.html")
    names2 = sorted(Path(urlparse(i["src"]).path).name for i in s2["images"])
    assert names2 == ["sub-02_desc-b0mask_dwi.png", "sub-02_desc-colorfa_dwi.png", "sub-02_desc-dti_dwi.png"]
    for text in ("DWI b=0 SNR", "Mean FA in WM", "dwi.tensor", "dipy"):
        assert text in s2["text"], text

    # numbers on the page are the metrics JSON's
    rec = json.loads((out / "sub-01" / "figures" / "sub-01_desc-qc_metrics.json").read_text())
    m = rec["metrics"]
    assert all(m[k] is not None for k in ("brainmask_ml", "gm_ml", "t1w_snr_wm", "t1w_cnr", "reg_similarity_after"))
    assert m["dwi_b0_snr"] is None  # sub-01 has no DWI
    assert qcpages.fmt(m["brainmask_ml"], "mL") in s1["text"]
    sizes = {p.name: p.stat().st_size for p in [group, *pages]}
    figs = {p.name: p.stat().st_size for p in out.glob("sub-*/figures/*.png")}
    print("page sizes (bytes):", sizes, "figure sizes:", figs)
    assert max(sizes.values()) < 200_000  # pages link their figures, they do not embed them


def test_a_broken_image_is_caught(browser, tmp_path):
    """The browser check itself fails on a missing image and on a console error."""
    page = tmp_path / "p.html"
    page.write_text('<!DOCTYPE html><html><body><img src="missing.png"></body></html>')
    with pytest.raises(AssertionError):
        check_page(browser, page)
    page.write_text("<!DOCTYPE html><html><body><script>console.error('x')</script></body></html>")
    with pytest.raises(AssertionError, match="console: x"):
        check_page(browser, page)


# ---- unit: page content ----------------------------------------------------------------------------
def _metrics(folder: Path, pid: str, ses: str = "n/a", **values) -> Path:
    m = {k: None for k in METRICS}
    m.update(values)
    p = folder / f"{pid}_desc-qc_metrics.json"
    p.write_text(json.dumps({"participant_id": pid, "session_id": ses, "metrics": m}))
    return p


def test_visit_page_content(tmp_path, monkeypatch):
    out = tmp_path / "out"
    figs = out / "sub-07" / "figures"
    figs.mkdir(parents=True)
    anat = out / "sub-07" / "anat"
    anat.mkdir()
    png = figs / "sub-07_desc-brainmask_T1w.png"
    png.write_bytes(b"\x89PNG")
    (anat / "sub-07_desc-brain_mask.json").write_text(json.dumps(
        {"Step": "anat.skullstrip", "Method": "brainextractor",
         "Versions": {"brainextractor": "0.2.2", "numpy": "2.3.5"}, "Parameters": {}}))
    (anat / "sub-07_dseg.json").write_text(json.dumps(
        {"Step": "anat.segment", "Method": "fsl_fast", "ToolVersion": "FSL 6.0.7.9", "Parameters": {}}))
    (anat / "sub-07_space-X_desc-registration_metrics.json").write_text("{\"correlation_after\": 0.9}")
    metrics = _metrics(figs, "sub-07", brainmask_ml=1432.25, reg_similarity_after=0.9312)
    page = out / "sub-07.html"
    monkeypatch.setitem(sys.modules, "neurosmk.status", None)  # not merged yet: ImportError
    assert qcpages.visit_status(str(out), "sub-07", None) is None
    html = qcpages.subject_page(str(page), str(metrics), [("Brain mask", str(png), "mask <on> T1w")],
                                qcpages.visit_sidecars(str(out), "sub-07", None),
                                group_page=str(out / "group" / "qc.html"), status_rows=None)
    assert page.read_text() == html
    assert '<img src="sub-07/figures/sub-07_desc-brainmask_T1w.png"' in html
    assert 'href="group/qc.html"' in html
    assert "mask &lt;on&gt; T1w" in html  # escaped
    assert re.search(r"Brain mask volume</td><td class=\"num\">1432 mL", html)
    assert re.search(r"after registration</td><td class=\"num\">0\.931<", html)
    assert "n/a for this visit:" in html and "DWI b=0 SNR" in html
    assert "status not available" in html
    assert "brainextractor 0.2.2" in html and "FSL 6.0.7.9" in html and "fsl_fast" in html
    assert 'href="sub-07/anat/sub-07_dseg.json"' in html
    assert "registration_metrics" not in html  # not a provenance sidecar

    rows = [{"stage": "anat_segment_atropos", "state": "failed",
             "error": "\nValueError: sub-07_T1w.nii.gz: image is all zero\nTraceback ...",
             "log": str(out / "logs" / "x.log")},
            {"stage": "anat_biascorrect_ants", "state": "done", "error": "", "log": ""}]
    (out / "logs").mkdir()
    (out / "logs" / "x.log").write_text("err")
    html = qcpages.subject_page(str(page), str(metrics), [], [], status_rows=rows)
    assert "1 failed step" in html and "1 done, 1 failed" in html
    assert "ValueError: sub-07_T1w.nii.gz: image is all zero</td>" in html  # the first line only
    assert "Traceback" not in html and 'href="logs/x.log"' in html


def test_status_rows_for_one_visit(tmp_path, monkeypatch):
    _fake_status(monkeypatch, ["sub-01", "sub-02", "sub-01"])
    rows = qcpages.visit_status(str(tmp_path), "sub-01", None)
    assert [r["stage"] for r in rows] == ["a", "c"]


def test_robust_z():
    z = qcpages.robust_z([10, 11, 9, 10, 10.5, 9.5, 40, None])
    assert z[-1] is None and z[6] > qcpages.Z_THRESHOLD and all(abs(v) < 2 for v in z[:6])
    assert qcpages.robust_z([1, 2]) == [None, None]  # fewer than 3 values
    assert qcpages.robust_z([5, 5, 5, 6]) == [None] * 4  # MAD 0: undefined, not infinite


def test_group_page_names_and_links_outliers(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    out = tmp_path / "out"
    visits = []
    for i in range(12):
        pid = f"sub-{i:02d}"
        vals = {"gm_ml": 600.0 + i, "fa_wm_mean": 0.40 + 0.002 * i}
        if i == 3:
            vals["gm_ml"] = 900.0
        if i == 5:
            vals["fa_wm_mean"] = None
        visits.append((str(_metrics(folder, pid, **vals)), str(out / f"{pid}.html")))
    html = qcpages.group_page(str(out / "group" / "qc.html"), visits, out_tsv=str(out / "group" / "qc.tsv"))
    outl = html.split('id="outliers"')[1].split("</section>")[0]
    assert "Outliers (1)" in outl and '<a href="../sub-03.html">sub-03</a>' in outl and "GM volume" in outl
    assert html.count("<circle") == 12 + 11  # one dot per visit and measure; sub-05 FA missing
    assert "n/a: 1" in html
    assert html.count('href="../sub-') >= 3 * 12 - 1  # index + two strip plots
    tsv = (out / "group" / "qc.tsv").read_text().splitlines()
    header = tsv[0].split("\t")
    assert header[:2] == ["participant_id", "session_id"] and "gm_ml_z" in header
    row5 = dict(zip(header, tsv[1 + 5].split("\t")))
    assert row5["participant_id"] == "sub-05" and row5["fa_wm_mean"] == "n/a" and row5["fa_wm_mean_z"] == "n/a"
    assert row5["brainmask_ml"] == "n/a"  # never a silent 0


def test_group_page_sessions_and_bad_metrics_file(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    p = _metrics(folder, "sub-01", "ses-1", gm_ml=600.0)
    html = qcpages.group_page(str(tmp_path / "g" / "qc.html"), [(str(p), str(tmp_path / "sub-01_ses-1.html"))])
    assert '<a href="../sub-01_ses-1.html">sub-01_ses-1</a>' in html
    bad = folder / "bad.json"
    bad.write_text("{}")
    with pytest.raises(ValueError, match="bad.json: not a neurosmk QC metrics file"):
        qcpages.group_page(str(tmp_path / "g" / "qc.html"), [(str(bad), "x.html")])


def test_group_page_status_column(tmp_path, monkeypatch):
    folder = tmp_path / "m"
    folder.mkdir()
    visits = [(str(_metrics(folder, f"sub-0{i}", gm_ml=600.0 + i)), str(tmp_path / f"sub-0{i}.html"))
              for i in (1, 2)]
    _fake_status(monkeypatch, ["sub-01", "sub-02", "sub-02"])
    failed = qcpages.failed_counts(str(tmp_path))
    assert failed == {("sub-02", "n/a"): 2}
    html = qcpages.group_page(str(tmp_path / "g" / "qc.html"), visits, failed=failed)
    assert "<th>status</th>" in html
    assert re.search(r'sub-01</a></td><td class="ok">ok</td>', html)
    assert re.search(r'sub-02</a></td><td class="bad">2 failed</td>', html)
    monkeypatch.setitem(sys.modules, "neurosmk.status", None)
    assert qcpages.failed_counts(str(tmp_path)) is None
    assert "<th>status</th>" not in qcpages.group_page(str(tmp_path / "g" / "qc.html"), visits, failed=None)


def _fake_status(monkeypatch, participants):
    """A stand-in neurosmk.status whose collect() returns stages a (done), b and c (failed) of
    the three given participants."""
    import sys
    import types

    import pandas as pd

    mod = types.ModuleType("neurosmk.status")
    mod.collect = lambda d, **kw: pd.DataFrame({"participant_id": participants,
                                          "session_id": ["n/a"] * 3, "stage": ["a", "b", "c"],
                                          "state": ["done", "failed", "failed"], "error": ["", "e", "f"],
                                          "log": ["", "", ""]})
    monkeypatch.setitem(sys.modules, "neurosmk.status", mod)
