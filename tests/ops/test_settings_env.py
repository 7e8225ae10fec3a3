"""Importing the settings reads the environment and nothing else: no directory is created,
and where the embedded mode keeps its files does not depend on the working directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = (
    "import json, learncredits.settings as s; "
    "print(json.dumps([str(s.VAR_DIR), str(s.DATABASES['default']['NAME']), str(s.STATIC_ROOT)]))"
)


def settings_seen(home: Path, cwd: Path, **extra: str) -> list[str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "LEARNCREDITS_VAR_DIR", "XDG_DATA_HOME")
    }
    env.update({"HOME": str(home), "SECRET_KEY": "x" * 50, **extra})
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, cwd=cwd, capture_output=True, text=True, check=True
    ).stdout
    return list(json.loads(out.strip().splitlines()[-1]))


def test_the_default_place_is_the_users_data_directory_wherever_the_command_runs(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    seen_a = settings_seen(home, tmp_path / "a")
    seen_b = settings_seen(home, tmp_path / "b")
    assert seen_a == seen_b
    var_dir = home / ".local" / "share" / "learncredits"
    assert seen_a == [str(var_dir), str(var_dir / "learncredits.sqlite3"), str(var_dir / "static")]
    # Nothing was created by importing the settings: not in HOME, not in either directory.
    assert list(home.iterdir()) == []
    assert list((tmp_path / "a").iterdir()) == list((tmp_path / "b").iterdir()) == []


def test_learncredits_var_dir_and_xdg_data_home_choose_the_place(tmp_path):
    chosen = tmp_path / "chosen"
    assert settings_seen(tmp_path, tmp_path, LEARNCREDITS_VAR_DIR=str(chosen))[0] == str(chosen)
    assert not chosen.exists()
    xdg = tmp_path / "xdg"
    assert settings_seen(tmp_path, tmp_path, XDG_DATA_HOME=str(xdg))[0] == str(xdg / "learncredits")


def test_a_command_creates_what_it_writes_to(tmp_path):
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("DATABASE_URL",)},
        "HOME": str(tmp_path),
        "SECRET_KEY": "x" * 50,
        "LEARNCREDITS_VAR_DIR": str(tmp_path / "var"),
        "DJANGO_SETTINGS_MODULE": "learncredits.settings",
    }
    subprocess.run(
        [sys.executable, "-m", "learncredits.cli", "migrate", "--verbosity", "0"],
        env=env,
        cwd=tmp_path,
        check=True,
        timeout=240,
    )
    assert (tmp_path / "var" / "learncredits.sqlite3").is_file()
    assert (tmp_path / "var" / "static").is_dir()
