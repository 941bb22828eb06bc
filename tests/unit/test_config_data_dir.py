"""``data_dir`` / ``VIGIL_DATA_DIR``: where the default SQLite database lives, and what wins."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from domain.config import EngineConfig
from launcher.config import DEFAULT_CONFIG_PATH, load_config

MINIMAL = """\
instance_id: test-1
instruments:
  - symbol: NIFTY
    lot_size: 25
"""


def load(tmp_path: Path, yaml_text: str, environ: dict[str, str]) -> EngineConfig:
    path = tmp_path / "profile.yaml"
    path.write_text(textwrap.dedent(yaml_text), encoding="utf-8")
    return load_config(path, environ=environ, dotenv_path=None)


class TestDataDir:
    def test_without_a_database_url_the_sqlite_file_lives_in_data_dir(self, tmp_path: Path) -> None:
        config = load(tmp_path, MINIMAL + "data_dir: var/data\n", {})
        assert config.database_url == "sqlite:///var/data/vigil.db"

    def test_vigil_data_dir_moves_the_default_database(self, tmp_path: Path) -> None:
        data_dir = tmp_path / "elsewhere"
        config = load(tmp_path, MINIMAL + "data_dir: var/data\n", {"VIGIL_DATA_DIR": str(data_dir)})
        assert config.data_dir == str(data_dir)
        assert config.database_url == f"sqlite:///{data_dir}/vigil.db"

    def test_the_default_data_dir_gives_the_default_database(self, tmp_path: Path) -> None:
        config = load(tmp_path, MINIMAL, {})
        assert (config.data_dir, config.database_url) == ("data", "sqlite:///data/vigil.db")

    def test_a_database_url_in_the_profile_wins_over_data_dir(self, tmp_path: Path) -> None:
        config = load(
            tmp_path,
            MINIMAL + "database_url: sqlite:///db/engine.db\n",
            {"VIGIL_DATA_DIR": "/srv/vigil"},
        )
        assert config.database_url == "sqlite:///db/engine.db"

    def test_database_url_from_the_environment_wins_over_everything(self, tmp_path: Path) -> None:
        url = "postgresql+psycopg://vigil:pw@db:5432/vigil"
        config = load(
            tmp_path,
            MINIMAL + "database_url: sqlite:///db/engine.db\n",
            {"VIGIL_DATA_DIR": "/srv/vigil", "DATABASE_URL": url},
        )
        assert config.database_url == url

    def test_the_shipped_paper_profile_follows_vigil_data_dir(self, tmp_path: Path) -> None:
        if not DEFAULT_CONFIG_PATH.exists():
            pytest.skip(f"{DEFAULT_CONFIG_PATH} is missing")
        config = load_config(None, environ={"VIGIL_DATA_DIR": str(tmp_path)}, dotenv_path=None)
        assert config.database_url == f"sqlite:///{tmp_path}/vigil.db"
