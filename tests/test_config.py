"""Config loading: defaults, a TOML file over them, flags over that; unknown keys and missing files are errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from dupwatch.daemon.config import IMAGE_SUFFIXES, Config, ConfigError, load_config
from tests.helpers import run_python


def test_defaults_when_there_is_no_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "nothing-here"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    cfg = load_config()
    assert cfg == Config()
    assert cfg.db == tmp_path / "state" / "dupwatch" / "dupwatch.db"
    assert cfg.suffixes == IMAGE_SUFFIXES


def test_the_user_config_file_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    (tmp_path / "dupwatch").mkdir()
    (tmp_path / "dupwatch" / "config.toml").write_text("workers = 1\n")
    assert load_config().workers == 1


def test_sections_are_only_for_readability_and_values_are_converted(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    p = tmp_path / "c.toml"
    p.write_text(
        "[paths]\ndb = '~/x.db'\n"
        f"roots = ['{photos}']\n"
        "[matching]\ncosine_threshold = 0.7\n"
        "[keeping]\nkeeper_rules = ['size', 'oldest']\n"
        f"reference_dirs = ['{photos}/../archive']\n"
        "suffixes = ['.JPG', '.Png']\n"
    )
    cfg = load_config(p)
    assert cfg.db == Path("~/x.db").expanduser()
    assert cfg.roots == (photos,)
    assert cfg.reference_dirs == ((tmp_path / "archive").resolve(),)
    assert cfg.cosine_threshold == 0.7
    assert cfg.keeper_rules == ("size", "oldest")
    assert cfg.suffixes == (".jpg", ".png")


def test_unknown_keys_missing_files_and_broken_toml_are_errors(tmp_path: Path) -> None:
    p = tmp_path / "c.toml"
    p.write_text("[matching]\ncosine_treshold = 0.7\n")
    with pytest.raises(ConfigError, match="cosine_treshold"):
        load_config(p)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.toml")
    p.write_text("workers = \n")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(p)


def test_flags_override_the_file_and_the_config_is_frozen(tmp_path: Path) -> None:
    cfg = Config(db=tmp_path / "a.db", workers=3)
    new = cfg.with_overrides(workers=None, cosine_threshold=0.9)  # None: the flag was not given
    assert (new.workers, new.cosine_threshold, cfg.cosine_threshold) == (3, 0.9, 0.8)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.workers = 1  # type: ignore[misc]


def test_files_beside_the_database(tmp_path: Path) -> None:
    cfg = Config(db=tmp_path / "lib.db")
    assert cfg.index_path == tmp_path / "lib.db.hnsw"
    assert cfg.lock_path == tmp_path / "lib.db.lock"
    assert cfg.status_path == tmp_path / "lib.db.status.json"
    assert cfg.events_path == tmp_path / "lib.db.events.jsonl"


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ('[throughput]\nworkers = "2"\n', 2, "workers = '2': expected a whole number"),
        ('reference_dirs = "/x"\n', 1, "reference_dirs = '/x': expected a list of strings"),
        ("[matching]\n\ncosine_threshold = 1.7\n", 3, "cosine_threshold = 1.7: must be between 0.0 and 1.0"),
        ("workers = -3\n", 1, "workers = -3: must be between 0 and 256"),
        ("match_rotations = 1\n", 1, "match_rotations = 1: expected true or false"),
        ('device = "gpu"\n', 1, "device = 'gpu': must be one of cpu, cuda"),
        ("[matching]\ncosine_treshold = 0.7\n", 2, "unknown key 'cosine_treshold' (did you mean cosine_threshold?)"),
        ('keeper_rules = ["resolution", "prettiest"]\n', 1, "unknown keeper criteria ['prettiest']"),
    ],
)
def test_bad_values_are_one_clear_error_with_file_line_and_key(
    tmp_path: Path, text: str, line: int, message: str
) -> None:
    p = tmp_path / "c.toml"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert str(e.value).startswith(f"{p}:{line}: ") and message in str(e.value)


def test_a_bad_config_is_a_usage_error_without_a_traceback(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from dupwatch.daemon.cli import main

    p = tmp_path / "c.toml"
    p.write_text('workers = "2"\n')
    r = CliRunner().invoke(main, ["--config", str(p), "status", "--db", str(tmp_path / "d.db")])
    assert r.exit_code == 2 and "expected a whole number" in r.stderr and "Traceback" not in r.output


def test_the_cnn_gets_the_cores_the_decode_workers_leave_free() -> None:
    from dupwatch.daemon.config import Config

    assert Config(workers=2).cnn_threads(2) == 1  # never 0, never oversubscribed
    assert Config(workers=2).cnn_threads(8) == 6
    assert Config(workers=0).cnn_threads(4) == 4
    assert Config(workers=2, torch_threads=3).cnn_threads(2) == 3  # the config says so


def test_the_embedder_sets_torch_threads() -> None:
    import torch

    from dupwatch.hashing.embedding import TinyNet, TorchEmbedder

    before = torch.get_num_threads()
    try:
        TorchEmbedder(TinyNet(12), dim=12, threads=1, precision="fp32", frozen=False)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_the_cnn_runs_small_batches_on_a_cpu_and_large_ones_where_asked() -> None:
    """On a CPU the network runs 4 images at a time by default, whatever the pipeline's batch of files: at 16 its
    activations outgrew the caches and malloc's reuse, and it ran 1.5x slower per image (bench.speed). The
    `cnn_batch` key sets it, for a GPU say."""
    from dupwatch.daemon.cli import _embedder
    from dupwatch.daemon.config import Config
    from dupwatch.hashing.embedding import CPU_BATCH, TinyNet, TorchEmbedder

    tiny = TorchEmbedder(TinyNet(12), dim=12, device="cpu", precision="fp32", frozen=False)
    assert tiny.batch_size == CPU_BATCH == 4
    asked = _embedder(Config(cnn_batch=8, batch_size=16, device="cpu")).real
    assert isinstance(asked, TorchEmbedder) and asked.batch_size == 8
    default = _embedder(Config(batch_size=16, device="cpu")).real
    assert isinstance(default, TorchEmbedder) and default.batch_size == CPU_BATCH


def test_scans_use_one_blas_thread_and_one_opencv_thread() -> None:
    """OpenBLAS's spinning threads beside torch and the decode workers made a scan under another busy process
    take 25 s instead of 17 s; `scan`, `watch` and the decode workers keep numpy's BLAS to one thread, and
    OpenCV's pool (the detail comparison's warps and blurs) likewise."""
    code = (
        "import numpy; from threadpoolctl import threadpool_info, threadpool_limits\n"
        "threadpool_limits(limits=2, user_api='blas')  # as on any 2-core machine\n"
        "from dupwatch.daemon.priority import one_math_thread; one_math_thread()\n"
        "print(sorted({i['num_threads'] for i in threadpool_info() if i['user_api'] == 'blas'}))\n"
        "import cv2; print(cv2.getNumThreads())"
    )
    assert run_python(code, timeout=60).stdout.split() == ["[1]", "1"]


def test_the_readme_example_config_is_valid(tmp_path: Path) -> None:
    """Every key the README shows is one the config accepts, with a value in range."""
    import re

    from dupwatch.daemon.config import load_config

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = re.search(r"```toml\n(.*?)```", readme, re.S)
    assert block is not None
    (tmp_path / "c.toml").write_text(block.group(1))
    cfg = load_config(tmp_path / "c.toml")
    assert cfg.port == 8765 and cfg.precision == "auto" and cfg.rotated_min_cosine == 0.35
