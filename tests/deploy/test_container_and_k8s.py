"""The container image definition and the Kubernetes manifests, checked by their ecosystems' tools.

No container engine runs here, so the image's entry point and user layout are exercised
by running `tandem run` as the image would: as uid 10001, state on a directory that user
owns, configuration read-only, and the image's own HEALTHCHECK command against it.
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from daemon.config import load_config
from tests.support.daemon import AppDb, bindings_toml, free_port
from tests.support.servers import sample_app_process

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CONTAINERFILE = ROOT / "deploy" / "container" / "Containerfile"
K8S = ROOT / "deploy" / "k8s"


def _docs(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _base() -> dict[str, dict[str, Any]]:
    kustomization = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    return {name: _docs(K8S / "base" / name)[0] for name in kustomization["resources"]}


def test_hadolint_passes():
    result = subprocess.run([str(BIN / "hadolint"), str(CONTAINERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_runs_as_a_numeric_non_root_user_with_a_health_check_and_a_state_volume():
    text = CONTAINERFILE.read_text()
    final_stage = text[text.rindex("FROM ") :]
    assert re.search(r"^USER 10001:10001$", final_stage, re.MULTILINE)
    assert "HEALTHCHECK" in final_stage and "/healthz" in final_stage
    assert 'VOLUME ["/var/lib/tandem"]' in final_stage
    assert "STOPSIGNAL SIGTERM" in final_stage
    assert "pip install" not in final_stage  # no build step, no build tools, in the final stage


def test_every_builtin_resource_passes_schema_validation():
    files = [K8S / "base" / name for name, doc in _base().items() if doc["apiVersion"] != "monitoring.coreos.com/v1"]
    result = subprocess.run(
        [str(BIN / "kubernetes-validate"), "--strict", *map(str, files)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("passed") == len(files)


def test_the_manifests_hang_together():
    base = _base()
    deployment, service = base["deployment.yaml"], base["service.yaml"]
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["state"]["persistentVolumeClaim"]["claimName"] == base["pvc.yaml"]["metadata"]["name"]
    assert volumes["config"]["configMap"]["name"] == base["configmap.yaml"]["metadata"]["name"]
    assert container["envFrom"][0]["secretRef"]["name"] == base["secret.yaml"]["metadata"]["name"]
    monitor = base["servicemonitor.yaml"]
    assert monitor["spec"]["endpoints"][0]["port"] in {p["name"] for p in service["spec"]["ports"]}
    kustomize_labels = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())["labels"][0]["pairs"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= kustomize_labels.items()
    listed = set(yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())["resources"])
    assert listed == {p.name for p in (K8S / "base").glob("*.yaml")} - {"kustomization.yaml"}


def test_overlay_patches_name_resources_of_the_base():
    known = {(doc["kind"], doc["metadata"]["name"]) for doc in _base().values()}
    overlay = yaml.safe_load((K8S / "overlays" / "example" / "kustomization.yaml").read_text())
    for patch in overlay["patches"]:
        doc = _docs(K8S / "overlays" / "example" / patch["path"])[0]
        assert (doc["kind"], doc["metadata"]["name"]) in known


def test_the_bindings_file_in_the_configmap_is_valid(tmp_path):
    config = tmp_path / "tandem.toml"
    config.write_text(_base()["configmap.yaml"]["data"]["tandem.toml"])
    loaded, secrets = load_config(config, environ={"TASKS_TOKEN": "x"})  # raises ConfigError if not
    assert [b.name for b in loaded.bindings] == ["tasks"]
    assert secrets == {"x"}


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv")
def test_the_entry_point_runs_as_the_image_user_with_state_on_its_volume(other_user_bin: Path):
    root = Path(tempfile.mkdtemp(prefix="tandem-image-", dir="/tmp"))  # reachable by uid 10001
    os.chmod(root, 0o755)
    state, etc = root / "var-lib-tandem", root / "etc-tandem"
    state.mkdir()
    etc.mkdir()
    os.chown(state, 10001, 10001)
    with sample_app_process() as url:
        AppDb(state / "app.db")
        os.chown(state / "app.db", 10001, 10001)
        (etc / "tandem.toml").write_text(bindings_toml(url).replace('path = "app.db"', f'path = "{state / "app.db"}"'))
        port = free_port()
        env = {
            "PATH": f"{other_user_bin}:/usr/bin:/bin",
            "TANDEM_CONFIG": str(etc / "tandem.toml"),
            "TANDEM_STATE": str(state / "tandem-state.db"),
            "TANDEM_HTTP_ADDR": f"127.0.0.1:{port}",
            "TANDEM_LOG_FORMAT": "json",
            "TASKS_TOKEN": "token-for-the-image-test",
        }
        user = ["setpriv", "--reuid=10001", "--regid=10001", "--clear-groups"]
        tandem = str(other_user_bin / "tandem")
        process = subprocess.Popen([*user, tandem, "run"], env=env, cwd=state, stdout=subprocess.PIPE)
        try:
            check = (
                "import time, urllib.request\n"
                "for _ in range(100):\n"
                "    try:\n"
                f"        urllib.request.urlopen('http://127.0.0.1:{port}/healthz', timeout=2); break\n"
                "    except OSError: time.sleep(0.1)\n"
                "else: raise SystemExit(1)\n"
            )
            python = str(other_user_bin / "python")
            assert subprocess.run([*user, python, "-c", check], timeout=30).returncode == 0
            process.terminate()
            assert process.wait(timeout=30) == 0
            assert (state / "tandem-state.db").stat().st_uid == 10001
        finally:
            if process.poll() is None:
                process.kill()
            shutil.rmtree(root, ignore_errors=True)
