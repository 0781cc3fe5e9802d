"""Cross-cutting: the recipes in docs/ pass the checks of the tools that run them, and use real
options."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner

from fetcher.cli import main

DOCS = Path(__file__).resolve().parent.parent / "docs"
PLAYBOOK = DOCS / "ansible" / "fetch-batch.yml"
INVENTORY = DOCS / "ansible" / "inventory.example.ini"
KUBERNETES = DOCS / "kubernetes" / "fetch-batch.yaml"
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"


def _syntax_check(playbook: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, ANSIBLE_HOME=str(tmp_path), ANSIBLE_LOCAL_TEMP=str(tmp_path))
    return subprocess.run(
        [str(ANSIBLE_PLAYBOOK), "--syntax-check", "-i", str(INVENTORY), str(playbook)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


@pytest.mark.slow
def test_the_ansible_playbook_passes_ansible_s_syntax_check(tmp_path: Path) -> None:
    done = _syntax_check(PLAYBOOK, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    # The check is not vacuous: a task with a module that does not exist fails it.
    broken = tmp_path / "broken.yml"
    broken.write_text(
        PLAYBOOK.read_text().replace("ansible.builtin.fetch:", "ansible.builtin.fetchh:")
    )
    assert _syntax_check(broken, tmp_path).returncode != 0


def _resources(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def test_the_kubernetes_recipe_validates_against_the_api_schemas() -> None:
    resources = _resources(KUBERNETES.read_text())
    kinds = [r["kind"] for r in resources]
    assert kinds.count("Job") == kinds.count("PersistentVolumeClaim") >= 3  # a volume each
    for resource in resources:
        kubernetes_validate.validate(resource, "1.31", strict=True)
    claims = {
        job["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"]
        for job in resources
        if job["kind"] == "Job"
    }
    assert claims == {
        r["metadata"]["name"] for r in resources if r["kind"] == "PersistentVolumeClaim"
    }
    # The check is not vacuous: a Job without its pod template is refused.
    job = next(r for r in resources if r["kind"] == "Job")
    del job["spec"]["template"]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, "1.31", strict=True)


@pytest.mark.parametrize("recipe", [PLAYBOOK, KUBERNETES], ids=["ansible", "kubernetes"])
def test_the_recipes_use_options_fetcher_has(recipe: Path) -> None:
    known = set()
    for command in ("fetch", "verify"):
        shown = CliRunner().invoke(main, [command, "--help"]).output
        known |= set(re.findall(r"--[a-z][a-z-]+", shown))
    used = set(re.findall(r"(?<![\w-])--[a-z][a-z-]+", recipe.read_text()))
    used -= {"--ask-vault-pass", "--for"}  # ansible-playbook's and kubectl's, in the comments
    assert used and used <= known, used - known
