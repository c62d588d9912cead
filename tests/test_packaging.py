"""vlsearch as users install it: a wheel built from the repository, installed (not editable) into a fresh virtual
environment beside the project's own dependencies, installs one top-level package and serves its page."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import venv
import zipfile
from pathlib import Path

import httpx
from packaging.requirements import Requirement

from tests.api_helpers import free_port, wait_until_serving

REPO = Path(__file__).resolve().parents[1]
PACKAGED = ("api", "captioner", "client", "encoders", "images", "indexer", "library", "migrations", "search", "web")


def build_wheel(out: Path) -> Path:
    """The wheel of the checkout's tracked files (copied, so the build leaves nothing in the checkout)."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    source = out / "source"
    for name in files.decode().split("\0"):
        if name and (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                    "-w", str(out / "dist"), str(source)], check=True, capture_output=True)
    return next((out / "dist").glob("vlsearch-*.whl"))


def fresh_environment(root: Path, wheel: Path) -> Path:
    """A new venv holding the wheel; the dependencies come from this environment through a .pth file (which adds
    a folder to sys.path without running the .pth files in it, so this checkout's editable install stays out)."""
    venv.create(root, with_pip=False)
    python = root / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "vlsearch-test-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q",
                    str(wheel)], check=True, capture_output=True)
    return root


def test_the_wheel_installs_only_vlsearch_and_serves_the_page(tmp_path):
    wheel = build_wheel(tmp_path / "build")
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0] for name in names} == {"vlsearch", wheel.name.split("-py3")[0] + ".dist-info"}
    tracked = subprocess.run(["git", "ls-files", *PACKAGED], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout.split()
    missing = [name for name in tracked if f"vlsearch/{name}" not in names]
    assert not missing, f"left out of the wheel (pyproject's packages and package-data): {missing}"
    env_root = fresh_environment(tmp_path / "venv", wheel)
    python = env_root / "bin" / "python"
    where = subprocess.run([str(python), "-c", "import vlsearch.api.app as m; print(m.__file__)"], cwd=tmp_path,
                           capture_output=True, text=True, check=True).stdout.strip()
    assert Path(where).is_relative_to(env_root), where  # the installed copy, not this checkout

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VLSEARCH_", "PYTHON"))}
    proc = subprocess.Popen(
        [str(env_root / "bin" / "vlsearch"), "serve", "--library", str(tmp_path / "lib"), "--port", str(port),
         "--model", "tiny-random", "--caption-model", "tiny-random", "--vqa-model", "tiny-random", "--itm-model",
         "tiny-random", "--model-dir", str(tmp_path / "models")],
        cwd=tmp_path, env={**env, "VLSEARCH_OCR": "false"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_serving(proc, url)
        page = httpx.get(url + "/")
        assert page.status_code == 200 and "<title>" in page.text and "app.js" in page.text
        assert httpx.get(url + "/web/app.js").status_code == 200
        assert httpx.get(url + "/api/v1/stats").json()["images"] == 0
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_torch_is_a_range_and_the_tested_pair_lies_in_it():
    """pyproject declares ranges (a user keeps the torch their CUDA driver needs); constraints.txt pins the pair
    `make` installs, which must satisfy them."""
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    declared = {r.name: r.specifier for r in map(Requirement, dependencies)}
    lines = (REPO / "constraints.txt").read_text().splitlines()
    pins = [Requirement(line) for line in lines if line.strip() and not line.startswith("#")]
    assert {pin.name for pin in pins} == {"torch", "torchvision"}, pins
    for pin in pins:
        (exact,) = pin.specifier
        assert exact.operator == "==", pin
        assert "==" not in {spec.operator for spec in declared[pin.name]}, declared[pin.name]
        assert declared[pin.name].contains(exact.version), (pin, declared[pin.name])
