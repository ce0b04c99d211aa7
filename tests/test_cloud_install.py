"""What Streamlit Community Cloud does: install ``requirements.txt`` alone into a fresh venv, then start the app.

No dev or ``--no-deps`` file is installed, so a package the app needs at
run time but that only those files bring is caught here.  ``PIP_RETRIES=0``
keeps pip from retrying the PyTorch CPU index for every project where it is
unreachable (see README, "Share on Community Cloud").
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request

import pytest

from core.publish import publish
from tests.conftest import PROJECT_ROOT
from tests.test_browser import free_port
from tests.test_publish import source  # noqa: F401  (the fixture)


@pytest.mark.slow
@pytest.mark.install
def test_requirements_alone_install_and_serve_a_published_collection(source, tmp_path):  # noqa: F811
    _, _, db = source
    collection = tmp_path / "collection"
    publish(db, collection, audio_mode="ogg")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = {**os.environ, "PIP_RETRIES": "0"}
    started = time.perf_counter()
    install = subprocess.run([str(venv / "bin/pip"), "install", "-q", "-r", "requirements.txt"], cwd=PROJECT_ROOT,
                             env=env, capture_output=True, text=True)
    assert install.returncode == 0, install.stderr[-3000:]
    print(f"requirements.txt installed in {time.perf_counter() - started:.0f} s")
    freeze = subprocess.run([str(venv / "bin/pip"), "freeze"], capture_output=True, text=True, check=True).stdout
    assert "torch==2.13.0+cpu" in freeze and "nvidia" not in freeze.lower()
    assert "pytest" not in freeze and "musicnn" not in freeze and "aisfx" not in freeze

    app_env = {**os.environ, "AEB_COLLECTION": str(collection), "AEB_CACHE": str(tmp_path / "cache")}
    app_env.pop("AEB_DB", None)
    pages = ["streamlit_app.py", "pages/2_Explore.py", "pages/3_Compare.py", "pages/4_Search.py"]
    script = ("import sys\nfrom streamlit.testing.v1 import AppTest\n"
              f"for page in {pages!r}:\n"
              "    at = AppTest.from_file(page, default_timeout=300)\n    at.run()\n"
              "    assert not at.exception, (page, [e.value for e in at.exception])\n"
              "print('pages ok')\n")
    run = subprocess.run([str(venv / "bin/python"), "-c", script], cwd=PROJECT_ROOT, env=app_env, capture_output=True,
                         text=True, timeout=900)
    assert run.returncode == 0 and "pages ok" in run.stdout, (run.stdout + run.stderr)[-3000:]

    port = free_port()
    server = subprocess.Popen([str(venv / "bin/streamlit"), "run", "streamlit_app.py", "--server.headless", "true",
                               "--server.port", str(port)], cwd=PROJECT_ROOT, env=app_env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=5) as reply:
                    assert reply.read() == b"ok"
                    break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "the server did not start"
                time.sleep(1)
    finally:
        server.terminate()
        server.wait(timeout=30)
